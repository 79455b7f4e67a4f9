//! The order batches leave in, as a pure decision the shipper asks before every
//! step. Oldest first: what was in flight on a lost connection is resent first
//! (on connect, before anything else), then the spool (batches taken while no
//! collector could), then batches the spool could not take (held in memory),
//! then new batches from the batcher. A new batch never overtakes an older one,
//! so the collector's per-source deduplication sees every source in order.

/// How many batches wait where; the shipper fills it in from its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queues {
    /// Sent on this connection, not yet acknowledged.
    pub in_flight: usize,
    /// Unsent batches in the spool.
    pub spooled: usize,
    /// Whether the spool may take one more batch.
    pub spool_has_room: bool,
    /// Batches the spool refused (a disk error), in memory.
    pub held: usize,
    /// The batcher is gone: no new batch will come.
    pub input_closed: bool,
}

/// What to do next on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Everything was acknowledged and no more will come.
    Done,
    /// Send the oldest spooled batch.
    SendSpooled,
    /// Send the oldest held batch.
    SendHeld,
    /// Nothing older may go now: wait for acknowledgements and, when `take` says
    /// where it would go, for a new batch.
    Wait { take: Option<Take> },
}

/// Where a new batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Straight into the window: nothing older waits.
    Send,
    /// Behind the spooled batches (the window is full and older batches wait).
    Spool,
}

impl Queues {
    pub fn done(&self) -> bool {
        self.input_closed && self.in_flight == 0 && self.spooled == 0 && self.held == 0
    }

    /// The next step with at most `window` batches in flight.
    pub fn next(&self, window: usize) -> Next {
        if self.done() {
            return Next::Done;
        }
        let room = self.in_flight < window;
        if room && self.spooled > 0 {
            return Next::SendSpooled;
        }
        if room && self.held > 0 {
            return Next::SendHeld;
        }
        Next::Wait {
            take: self.take(window),
        }
    }

    /// Where a new batch would go now, if one may be taken at all. While anything
    /// is held no new batch is taken (the disk refused the last one).
    fn take(&self, window: usize) -> Option<Take> {
        if self.input_closed || self.held > 0 {
            None
        } else if self.spooled == 0 && self.in_flight < window {
            Some(Take::Send)
        } else if self.spooled > 0 && self.spool_has_room {
            Some(Take::Spool)
        } else {
            None
        }
    }

    /// While no collector is reachable: whether to take a new batch into the spool
    /// (so files keep being read until it is full).
    pub fn take_offline(&self) -> bool {
        !self.input_closed && self.held == 0 && self.spool_has_room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: usize = 4;

    fn q() -> Queues {
        Queues {
            in_flight: 0,
            spooled: 0,
            spool_has_room: true,
            held: 0,
            input_closed: false,
        }
    }

    #[test]
    fn done_only_when_closed_and_everything_is_acknowledged() {
        assert_eq!(
            Queues {
                input_closed: true,
                ..q()
            }
            .next(WINDOW),
            Next::Done
        );
        for open in [
            Queues {
                in_flight: 1,
                ..q()
            },
            Queues { spooled: 1, ..q() },
            Queues { held: 1, ..q() },
        ] {
            let closed = Queues {
                input_closed: true,
                ..open
            };
            assert_ne!(closed.next(WINDOW), Next::Done, "{closed:?}");
        }
    }

    #[test]
    fn idle_takes_new_batches_straight_into_the_window() {
        assert_eq!(
            q().next(WINDOW),
            Next::Wait {
                take: Some(Take::Send)
            }
        );
        let nearly = Queues {
            in_flight: WINDOW - 1,
            ..q()
        };
        assert_eq!(
            nearly.next(WINDOW),
            Next::Wait {
                take: Some(Take::Send)
            }
        );
    }

    #[test]
    fn a_full_window_waits_for_acknowledgements() {
        let full = Queues {
            in_flight: WINDOW,
            ..q()
        };
        assert_eq!(full.next(WINDOW), Next::Wait { take: None });
    }

    #[test]
    fn the_spool_goes_before_held_and_new_batches() {
        let both = Queues {
            spooled: 2,
            held: 1,
            ..q()
        };
        assert_eq!(both.next(WINDOW), Next::SendSpooled);
        let held_only = Queues { held: 1, ..q() };
        assert_eq!(held_only.next(WINDOW), Next::SendHeld);
    }

    #[test]
    fn with_a_full_window_new_batches_queue_behind_the_spool() {
        let behind = Queues {
            in_flight: WINDOW,
            spooled: 3,
            ..q()
        };
        assert_eq!(
            behind.next(WINDOW),
            Next::Wait {
                take: Some(Take::Spool)
            }
        );
        let full_spool = Queues {
            spool_has_room: false,
            ..behind
        };
        assert_eq!(full_spool.next(WINDOW), Next::Wait { take: None });
    }

    #[test]
    fn held_batches_stop_new_ones_until_delivered() {
        let held = Queues {
            in_flight: WINDOW,
            held: 1,
            ..q()
        };
        assert_eq!(held.next(WINDOW), Next::Wait { take: None });
        assert!(!held.take_offline());
    }

    #[test]
    fn a_closed_input_takes_nothing_but_drains_the_rest() {
        let draining = Queues {
            in_flight: 1,
            input_closed: true,
            ..q()
        };
        assert_eq!(draining.next(WINDOW), Next::Wait { take: None });
        let spooled = Queues {
            spooled: 1,
            input_closed: true,
            ..q()
        };
        assert_eq!(spooled.next(WINDOW), Next::SendSpooled);
        assert!(!spooled.take_offline());
    }

    #[test]
    fn offline_fills_the_spool_until_it_is_full() {
        assert!(q().take_offline());
        assert!(Queues { spooled: 10, ..q() }.take_offline());
        assert!(
            !Queues {
                spool_has_room: false,
                ..q()
            }
            .take_offline()
        );
    }
}
