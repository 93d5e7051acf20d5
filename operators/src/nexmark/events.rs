//! NEXMark events, generated deterministically by the `nexmark` crate and converted into
//! compact types that the operators and state snapshots can carry.
//!
//! The `nexmark` generator is driven with an explicit `base_time` and a constant rate, so
//! the same [`NexmarkSpec`] gives the same events in every run. Its timestamps are the
//! events' *event time* in milliseconds; how fast events are offered to a pipeline is a
//! separate matter (the load shape of the source). The generator's `extra` padding fields
//! are dropped: they only make events bigger. Keep runs under ~1e8 events: past that the
//! generator's timestamps lose precision.

use nexmark::config::{NexmarkConfig, RateShape};
use rkyv::{Archive, Deserialize, Serialize};

/// The default base time of generated events: 2026-01-01T00:00:00Z, in milliseconds.
pub const DEFAULT_BASE_TIME_MS: u64 = 1_767_225_600_000;

/// A new user of the auction site.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Person {
    /// Person id.
    pub id: u64,
    /// Full name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Credit card number.
    pub credit_card: String,
    /// US city.
    pub city: String,
    /// US state, two letters (lower case as generated).
    pub state: String,
    /// Event time, milliseconds.
    pub date_time: u64,
}

/// A new auction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Auction {
    /// Auction id.
    pub id: u64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Initial bid, in cents.
    pub initial_bid: u64,
    /// Reserve price, in cents.
    pub reserve: u64,
    /// Event time, milliseconds.
    pub date_time: u64,
    /// When the auction closes, milliseconds (event time).
    pub expires: u64,
    /// The seller's person id.
    pub seller: u64,
    /// Category id.
    pub category: u64,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Bid {
    /// The auction bid on.
    pub auction: u64,
    /// The bidder's person id.
    pub bidder: u64,
    /// Price, in cents.
    pub price: u64,
    /// Channel the bid came through.
    pub channel: String,
    /// URL of the bid.
    pub url: String,
    /// Event time, milliseconds.
    pub date_time: u64,
}

/// One NEXMark event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event time, milliseconds.
    pub fn time(&self) -> u64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// What to generate.
///
/// ```
/// use dirigo_operators::nexmark::events::NexmarkSpec;
///
/// let events = NexmarkSpec { events: 100, ..NexmarkSpec::default() }.generate();
/// assert_eq!(events.len(), 100);
/// assert!(events.windows(2).all(|w| w[0].time() <= w[1].time()));
/// assert_eq!(events, NexmarkSpec { events: 100, ..NexmarkSpec::default() }.generate());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NexmarkSpec {
    /// How many events.
    pub events: usize,
    /// Event time of the first event, milliseconds.
    pub base_time: u64,
    /// Events per second of *event time* (the spacing of timestamps; not the offered
    /// load).
    pub event_time_rate: usize,
    /// Index of the first event (to generate a slice of a longer sequence).
    pub first_event: u64,
}

impl Default for NexmarkSpec {
    fn default() -> Self {
        Self {
            events: 200_000,
            base_time: DEFAULT_BASE_TIME_MS,
            event_time_rate: 10_000,
            first_event: 0,
        }
    }
}

impl NexmarkSpec {
    /// The generator configuration: explicit base time, one constant rate.
    pub fn config(&self) -> NexmarkConfig {
        NexmarkConfig {
            base_time: self.base_time,
            rate_shape: RateShape::Square,
            first_rate: self.event_time_rate.max(1),
            next_rate: self.event_time_rate.max(1),
            ..NexmarkConfig::default()
        }
    }

    /// The events, in generation (and event-time) order.
    pub fn generate(&self) -> Vec<Event> {
        self.iter().collect()
    }

    /// Partition `partition` of `partitions`: events `partition`, `partition + partitions`,
    /// … of [`iter`](Self::iter), generated directly (not by skipping the others).
    pub fn partition_iter(&self, partition: u32, partitions: u32) -> impl Iterator<Item = Event> {
        let partitions = u64::from(partitions.max(1));
        let partition = u64::from(partition) % partitions;
        let events = (self.events as u64).saturating_sub(partition);
        let count = events.div_ceil(partitions);
        nexmark::EventGenerator::new(self.config())
            .with_offset(self.first_event + partition)
            .with_step(partitions)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(Event::from)
    }

    /// The events, lazily.
    pub fn iter(&self) -> impl Iterator<Item = Event> {
        nexmark::EventGenerator::new(self.config())
            .with_offset(self.first_event)
            .take(self.events)
            .map(Event::from)
    }
}

impl From<nexmark::event::Event> for Event {
    fn from(event: nexmark::event::Event) -> Self {
        match event {
            nexmark::event::Event::Person(p) => Event::Person(Person {
                id: p.id as u64,
                name: p.name,
                email: p.email_address,
                credit_card: p.credit_card,
                city: p.city,
                state: p.state,
                date_time: p.date_time,
            }),
            nexmark::event::Event::Auction(a) => Event::Auction(Auction {
                id: a.id as u64,
                item_name: a.item_name,
                description: a.description,
                initial_bid: a.initial_bid as u64,
                reserve: a.reserve as u64,
                date_time: a.date_time,
                expires: a.expires,
                seller: a.seller as u64,
                category: a.category as u64,
            }),
            nexmark::event::Event::Bid(b) => Event::Bid(Bid {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                channel: b.channel,
                url: b.url,
                date_time: b.date_time,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_interleave_into_the_whole_sequence() {
        let spec = NexmarkSpec {
            events: 1_001,
            first_event: 7,
            ..NexmarkSpec::default()
        };
        let whole: Vec<Event> = spec.iter().collect();
        let parts: Vec<Vec<Event>> = (0..3)
            .map(|p| spec.partition_iter(p, 3).collect())
            .collect();
        let mut interleaved = Vec::new();
        for i in 0..whole.len() {
            interleaved.push(parts[i % 3][i / 3].clone());
        }
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), whole.len());
        assert_eq!(interleaved, whole);
    }

    #[test]
    fn generation_is_deterministic_and_mixed() {
        let spec = NexmarkSpec {
            events: 5_000,
            ..NexmarkSpec::default()
        };
        let events = spec.generate();
        assert_eq!(events, spec.generate());
        let bids = events.iter().filter(|e| matches!(e, Event::Bid(_))).count();
        let people = events
            .iter()
            .filter(|e| matches!(e, Event::Person(_)))
            .count();
        // 1 person : 3 auctions : 46 bids.
        assert_eq!(people, 100);
        assert_eq!(bids, 4_600);
        assert_eq!(events[0].time(), DEFAULT_BASE_TIME_MS);
        // 10 000 events per second of event time: 5 000 events span half a second.
        let span = events.last().unwrap().time() - events[0].time();
        assert!((450..=550).contains(&span), "{span}");
    }
}
