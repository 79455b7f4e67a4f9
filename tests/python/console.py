"""Drive the web console in headless Chromium over the DevTools protocol.

Usage: console.py CHROMIUM URL TOPIC LOG_FILE SHOTS_DIR EXPECTED_LINES

URL is the console's address with `#…&token=…` as quickstart prints it (without
the page part). The collector is fed by a real agent tailing LOG_FILE, which holds
EXPECTED_LINES lines, among them lines with HTML and script in them. The script
checks the search page (results, histogram adding up to them, a filter, expanding a
line, its context), that no log byte becomes markup or runs, the live tail (a line
appended after the page opened shows up), and the overview (the agent is listed),
saving a screenshot of each page into SHOTS_DIR. Prints one JSON line; exit 0 only
when every check passed.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client (PyPI)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self, chromium):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="tributary-chromium-")
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1280,800",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        # No Origin header: DevTools refuses origins it was not told about.
        self.ws = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )
        self.next_id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, what, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"not within {timeout}s: {what}")

    def goto(self, url):
        self.call("Page.navigate", url=url)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait()


def main():
    chromium, url, topic, log_file, shots, expected = sys.argv[1:7]
    expected = int(expected)
    base, _, frag = url.partition("#")
    token = dict(p.split("=", 1) for p in frag.split("?", 1)[-1].split("&") if "=" in p).get("token", "")
    b = Browser(chromium)
    checks = []
    try:
        # Search: every line of the file, newest first; the histogram adds up to them.
        b.goto(f"{base}#search?topic={topic}&range=1h&token={token}")
        b.wait(f"document.querySelectorAll('#results li').length === {expected}", "all lines listed")
        b.wait("document.querySelectorAll('#histogram g.bar').length > 0", "histogram drawn")
        bars = b.eval("[...document.querySelectorAll('#histogram g.bar')].reduce((n, g) => n + Number(g.dataset.count), 0)")
        assert bars == expected, f"histogram sums to {bars}, results {expected}"
        assert "token=" not in b.eval("location.href"), "the token stays in the address bar"
        checks.append("search")
        b.screenshot(os.path.join(shots, "console-search.png"))

        # No log byte becomes markup or runs.
        assert b.eval("document.querySelectorAll('#results img, #results script, #results a').length") == 0
        assert b.eval("window.__pwned === undefined"), "a log line ran script"
        texts = b.eval("[...document.querySelectorAll('#results .msg')].map(e => e.textContent)")
        assert any("<script>window.__pwned=1</script>" in t for t in texts), texts[:3]
        assert any('"><img src=x onerror=window.__pwned=1>' in t for t in texts), texts[:3]
        checks.append("escaping")

        # A filter narrows the results, and the histogram with them.
        b.goto(f"{base}#search?topic={topic}&range=1h&contains=ERROR")
        b.wait(
            "document.querySelectorAll('#results li').length > 0 && "
            "[...document.querySelectorAll('#results .msg')].every(e => e.textContent.includes('ERROR'))",
            "filtered results",
        )
        n = b.eval("document.querySelectorAll('#results li').length")
        errors = sum(1 for line in open(log_file, encoding="utf-8") if "ERROR" in line)
        assert n == errors, f"filter shows {n}, the file has {errors}"
        bars = b.eval("[...document.querySelectorAll('#histogram g.bar')].reduce((k, g) => k + Number(g.dataset.count), 0)")
        assert bars == errors, f"filtered histogram sums to {bars}"
        checks.append("filter")

        # Clicking a bar narrows the range to its bucket: the results are its records.
        before = b.eval("Number(document.body.dataset.searched || 0)")
        want = b.eval(
            "(() => { const g = [...document.querySelectorAll('#histogram g.bar')]"
            ".find(g => Number(g.dataset.count) > 0);"
            " g.dispatchEvent(new MouseEvent('click', {bubbles: true}));"
            " return Number(g.dataset.count); })()"
        )
        b.wait(
            f"Number(document.body.dataset.searched) > {before} && "
            "document.getElementById('s-range').value === 'abs' && "
            f"document.querySelectorAll('#results li').length === {want} && "
            "location.hash.includes('until=')",
            "a bar narrows the search to its bucket",
        )
        checks.append("narrow")

        # Expanding a line shows its fields; its context comes from its source.
        b.eval("document.querySelector('#results li').click()")
        b.wait("!!document.querySelector('#results li dl')", "details shown")
        dts = b.eval("[...document.querySelectorAll('#results li dl dt')].map(e => e.textContent)")
        for k in ("partition", "offset", "host", "source", "agent", "message"):
            assert k in dts, f"{k} missing from {dts}"
        b.eval("document.querySelector('#results li button').click()")
        b.wait("!!document.querySelector('#results li .context li.focus')", "context shown")
        checks.append("details")

        # Live tail: a line appended after the page opened appears.
        b.goto(f"{base}#tail?topic={topic}")
        b.wait("document.getElementById('t-state').textContent === 'following'", "tail following")
        time.sleep(0.5)
        marker = f"tail check {time.time_ns()}"
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(marker + "\n")
        b.wait(
            f"[...document.querySelectorAll('#tail .msg')].some(e => e.textContent === {json.dumps(marker)})",
            "appended line in the live tail",
        )
        checks.append("tail")
        b.screenshot(os.path.join(shots, "console-tail.png"))

        # Overview: the agent and the topic.
        b.goto(f"{base}#overview")
        b.wait("document.querySelectorAll('#o-agents tbody tr').length === 1", "agent listed")
        b.wait(f"[...document.querySelectorAll('#o-topics td')].some(e => e.textContent === {json.dumps(topic)})", "topic listed")
        checks.append("overview")
        b.screenshot(os.path.join(shots, "console-overview.png"))
    finally:
        b.close()
    print(json.dumps({"ok": True, "checks": checks}))


if __name__ == "__main__":
    main()
