//! The SQLite writer's roller: a thread of its own that adds each stored
//! event to the held-back rollups ([`Aggregate`]) and to the dashboard's
//! cube ([`Cube`]), and frees them once written. The writer only runs
//! SQL: it hands each group's new events over and goes on with the next
//! group, and takes what the roller holds when it writes the rollups.
//! One channel carries everything in order, so what the writer takes
//! holds every event it handed over before.
//!
//! Should no thread be had, the roller does its work on the writer's.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use super::super::cube::Cube;
use super::super::rollup::Aggregate;
use super::super::rows::EventRow;

/// Which of what the roller holds the events are added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AddTo {
    /// Both: events just stored.
    Both,
    /// The cube alone: events whose other rollups are written already
    /// (recovery after a start).
    Cube,
}

/// One of the two things the roller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Aggregate,
    Cube,
}

enum Message {
    Add(Vec<Arc<EventRow>>, AddTo),
    /// Hand back the rollups or the cube (the other part comes back empty).
    Take(Part),
    /// Forget everything held (the writer rebuilds it from stored events).
    Reset,
    /// Written: freed here, off the writer's thread.
    Free(Aggregate),
}

#[derive(Default)]
struct Held {
    aggregate: Aggregate,
    cube: Cube,
}

impl Held {
    /// What is held of `part`, which starts afresh.
    fn take(&mut self, part: Part) -> Held {
        match part {
            Part::Aggregate => Held {
                aggregate: std::mem::take(&mut self.aggregate),
                cube: Cube::default(),
            },
            Part::Cube => Held {
                aggregate: Aggregate::default(),
                cube: std::mem::take(&mut self.cube),
            },
        }
    }

    fn add(&mut self, events: &[Arc<EventRow>], into: AddTo) {
        for e in events {
            if into == AddTo::Both {
                self.aggregate.add(e);
            }
            self.cube.add(e);
        }
    }
}

enum Worker {
    Thread {
        to: Sender<Message>,
        taken: Receiver<Held>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    Inline(Box<Held>),
}

/// What the writer knows of the roller: its thread, and how many events
/// each of its holdings has (so that it can tell when to write them
/// without asking).
pub(super) struct Roller {
    worker: Worker,
    aggregate_events: usize,
    cube_events: usize,
    /// Events not yet handed over, and what they are added to: handed
    /// over [`HAND_OVER`] at a time, or before anything is taken, so that
    /// groups of a few events do not wake the roller each.
    waiting: Vec<Arc<EventRow>>,
    waiting_into: AddTo,
}

/// Events handed to the roller's thread at a time.
const HAND_OVER: usize = 256;

/// The roller's thread stopped (it panicked): what it held is lost, and
/// the writer rebuilds it from the stored events.
#[derive(Debug)]
pub(super) struct Gone;

impl Roller {
    pub(super) fn start() -> Roller {
        let (to, messages) = channel::<Message>();
        let (give, taken) = channel::<Held>();
        let spawned = std::thread::Builder::new()
            .name("sqlite-roller".into())
            .spawn(move || {
                let mut held = Held::default();
                for message in messages {
                    match message {
                        Message::Add(events, into) => held.add(&events, into),
                        Message::Take(part) => {
                            let _ = give.send(held.take(part));
                        }
                        Message::Reset => held = Held::default(),
                        Message::Free(aggregate) => drop(aggregate),
                    }
                }
            });
        let worker = match spawned {
            Ok(thread) => Worker::Thread {
                to,
                taken,
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the rollups; the SQLite writer adds events to them itself");
                Worker::Inline(Box::default())
            }
        };
        Roller {
            worker,
            aggregate_events: 0,
            cube_events: 0,
            waiting: Vec::new(),
            waiting_into: AddTo::Both,
        }
    }

    /// Hands the waiting events over.
    fn hand_over(&mut self) -> Result<(), Gone> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.waiting);
        self.send(Message::Add(events, self.waiting_into))
    }

    fn send(&self, message: Message) -> Result<(), Gone> {
        match &self.worker {
            Worker::Thread { to, .. } => to.send(message).map_err(|_| Gone),
            Worker::Inline(_) => Ok(()),
        }
    }

    /// Adds `events` to what is held, as `into` says.
    pub(super) fn add(&mut self, events: Vec<Arc<EventRow>>, into: AddTo) -> Result<(), Gone> {
        if events.is_empty() {
            return Ok(());
        }
        if into == AddTo::Both {
            self.aggregate_events += events.len();
        }
        self.cube_events += events.len();
        if let Worker::Inline(held) = &mut self.worker {
            held.add(&events, into);
            return Ok(());
        }
        if into != self.waiting_into {
            self.hand_over()?;
            self.waiting_into = into;
        }
        if self.waiting.is_empty() {
            self.waiting = events;
        } else {
            self.waiting.extend(events);
        }
        if self.waiting.len() >= HAND_OVER {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Events in the held rollups.
    pub(super) fn aggregate_events(&self) -> usize {
        self.aggregate_events
    }

    /// Events in the held cube.
    pub(super) fn cube_events(&self) -> usize {
        self.cube_events
    }

    /// What is held of `part`, of every event added so far; it starts afresh.
    fn take(&mut self, part: Part) -> Result<Held, Gone> {
        self.hand_over()?;
        match part {
            Part::Aggregate => self.aggregate_events = 0,
            Part::Cube => self.cube_events = 0,
        }
        match &mut self.worker {
            Worker::Inline(held) => Ok(held.take(part)),
            Worker::Thread { to, taken, .. } => {
                to.send(Message::Take(part)).map_err(|_| Gone)?;
                taken.recv().map_err(|_| Gone)
            }
        }
    }

    /// The held rollups of every event added so far; the roller starts
    /// new ones.
    pub(super) fn take_aggregate(&mut self) -> Result<Aggregate, Gone> {
        Ok(self.take(Part::Aggregate)?.aggregate)
    }

    /// The held cube of every event added so far; the roller starts a new one.
    pub(super) fn take_cube(&mut self) -> Result<Cube, Gone> {
        Ok(self.take(Part::Cube)?.cube)
    }

    /// Forgets everything held.
    pub(super) fn reset(&mut self) -> Result<(), Gone> {
        self.aggregate_events = 0;
        self.cube_events = 0;
        self.waiting.clear();
        match &mut self.worker {
            Worker::Inline(held) => {
                **held = Held::default();
                Ok(())
            }
            Worker::Thread { .. } => self.send(Message::Reset),
        }
    }

    /// Frees written rollups (on the roller's thread: freeing millions of
    /// entries takes a while).
    pub(super) fn free(&self, aggregate: Aggregate) {
        if let Worker::Thread { to, .. } = &self.worker {
            let _ = to.send(Message::Free(aggregate));
        }
    }
}

impl Drop for Roller {
    fn drop(&mut self) {
        if let Worker::Thread { to, thread, .. } = &mut self.worker {
            // The thread ends once its queue is closed and drained.
            let (closed, _) = channel();
            drop(std::mem::replace(to, closed));
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use piperider_event::{CliEvent, WireEvent};

    use super::*;

    /// An event of user `n`.
    fn event(n: u8) -> Arc<EventRow> {
        let now = chrono::Utc::now();
        let raw = piperider_testkit::cli_event(&format!("{n:032x}"), &"a".repeat(32)).to_string();
        let event = CliEvent::parse(raw.as_bytes(), now).unwrap();
        Arc::new(EventRow::new(event, None, None, now.timestamp_millis()))
    }

    /// The users in held rollups.
    fn users(aggregate: &Aggregate) -> usize {
        aggregate.tables()[0].1.len()
    }

    #[test]
    fn what_is_taken_holds_every_event_added_before() {
        let mut roller = Roller::start();
        roller.add(vec![event(1), event(2)], AddTo::Both).unwrap();
        roller.add(vec![event(3)], AddTo::Cube).unwrap();
        assert_eq!((roller.aggregate_events(), roller.cube_events()), (2, 3));
        assert_eq!(users(&roller.take_aggregate().unwrap()), 2);
        assert_eq!(roller.take_cube().unwrap().events(), 3);
        assert_eq!((roller.aggregate_events(), roller.cube_events()), (0, 0));
        // Taken once: the next holds only what came after.
        roller.add(vec![event(4)], AddTo::Both).unwrap();
        assert_eq!(users(&roller.take_aggregate().unwrap()), 1);
        assert_eq!(roller.take_cube().unwrap().events(), 1);
    }

    #[test]
    fn events_handed_over_in_part_are_all_taken() {
        let mut roller = Roller::start();
        let events: Vec<_> = (0..HAND_OVER + 44).map(|n| event(n as u8)).collect();
        for chunk in events.chunks(10) {
            roller.add(chunk.to_vec(), AddTo::Both).unwrap();
        }
        assert_eq!(roller.take_cube().unwrap().events(), HAND_OVER + 44);
        assert_eq!(users(&roller.take_aggregate().unwrap()), 256);
    }

    #[test]
    fn a_reset_forgets_what_was_held() {
        let mut roller = Roller::start();
        roller.add(vec![event(1)], AddTo::Both).unwrap();
        roller.reset().unwrap();
        assert_eq!(users(&roller.take_aggregate().unwrap()), 0);
        assert_eq!(roller.take_cube().unwrap().events(), 0);
    }
}
