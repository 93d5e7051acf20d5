//! The NEXMark queries as dirigo apps. Each takes the stream of events and returns its
//! output stream; [`QUERIES`] lists them and [`Query::build`] builds one by name. What each
//! computes, exactly, is in [`super::output`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rkyv::{Archive, Deserialize, Serialize};
use rustc_hash::FxHashMap;

use super::events::{Auction, Bid, Event, Person};
use super::output::{Q11, Q2, Q3, Q4, Q5, Q7, Q8};
use crate::dataflow::{Data, Stream, Time};
use crate::sink::{Collected, LatencyRecorder};
use crate::window::{WindowSpec, Windows};

/// Every query, by name.
pub const QUERIES: [&str; 9] = ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q11"];

/// Ten seconds, in event-time milliseconds: the queries' window size and session gap.
const TEN_SECONDS: Time = 10_000;

fn bids(events: &Stream<Event>) -> Stream<Bid> {
    events.flat_map("bids", |event| match event {
        Event::Bid(bid) => Some(bid),
        _ => None,
    })
}

/// q0: every bid.
pub fn q0(events: &Stream<Event>) -> Stream<Bid> {
    bids(events)
}

/// q1: bids with their price in euros.
pub fn q1(events: &Stream<Event>) -> Stream<Bid> {
    events.flat_map("euros", |event| match event {
        Event::Bid(mut bid) => {
            bid.price = bid.price * 908 / 1000;
            Some(bid)
        }
        _ => None,
    })
}

/// q2: bids on every 123rd auction.
pub fn q2(events: &Stream<Event>) -> Stream<Q2> {
    events.flat_map("selection", |event| match event {
        Event::Bid(bid) if bid.auction % 123 == 0 => Some(Q2 {
            auction: bid.auction,
            price: bid.price,
        }),
        _ => None,
    })
}

/// q3's join state, per partition.
#[derive(Default)]
struct LocalItems {
    people: FxHashMap<u64, (String, String, String)>,
    waiting: FxHashMap<u64, Vec<u64>>,
}

/// q3: sellers in Oregon, Idaho or California with their category-10 auctions.
pub fn q3(events: &Stream<Event>) -> Stream<Q3> {
    let people = events.flat_map("local people", |event| match event {
        Event::Person(person) if matches!(person.state.as_str(), "or" | "id" | "ca") => {
            Some(person)
        }
        _ => None,
    });
    let auctions = events.flat_map("category 10", |event| match event {
        Event::Auction(auction) if auction.category == 10 => Some(auction),
        _ => None,
    });
    people.key_by(|person: &Person| person.id).process2(
        &auctions.key_by(|auction: &Auction| auction.seller),
        "local items",
        |_| LocalItems::default(),
        |state, time, person, out| {
            if let Some(auctions) = state.waiting.remove(&person.id) {
                for auction in auctions {
                    out.push((
                        time,
                        Q3 {
                            name: person.name.clone(),
                            city: person.city.clone(),
                            state: person.state.clone(),
                            auction,
                        },
                    ));
                }
            }
            state
                .people
                .insert(person.id, (person.name, person.city, person.state));
        },
        |state, time, auction, out| match state.people.get(&auction.seller) {
            Some((name, city, us_state)) => out.push((
                time,
                Q3 {
                    name: name.clone(),
                    city: city.clone(),
                    state: us_state.clone(),
                    auction: auction.id,
                },
            )),
            None => state
                .waiting
                .entry(auction.seller)
                .or_default()
                .push(auction.id),
        },
        |_, _, _| {},
    )
}

/// An open auction, as q4 follows it.
struct OpenAuction {
    start: Time,
    expires: Time,
    reserve: u64,
    category: u64,
    best: Option<u64>,
}

/// q4's winning-bid state, per partition.
#[derive(Default)]
struct Winners {
    open: FxHashMap<u64, OpenAuction>,
    closing: BinaryHeap<Reverse<(Time, u64)>>,
    /// Bids for auctions not seen yet: `(time, price)`.
    early: FxHashMap<u64, Vec<(Time, u64)>>,
}

impl OpenAuction {
    fn offer(&mut self, time: Time, price: u64) {
        if self.start <= time && time < self.expires && price >= self.reserve {
            self.best = Some(self.best.map_or(price, |best| best.max(price)));
        }
    }
}

/// A category's winning prices so far: sum and count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct PriceSum {
    /// Sum of the winning prices.
    pub sum: u64,
    /// How many auctions.
    pub count: u64,
}

/// q4: the average winning price per category, updated as auctions close.
pub fn q4(events: &Stream<Event>) -> Stream<Q4> {
    let auctions = events.flat_map("auctions", |event| match event {
        Event::Auction(auction) => Some(auction),
        _ => None,
    });
    let winners = auctions.key_by(|auction: &Auction| auction.id).process2(
        &bids(events).key_by(|bid: &Bid| bid.auction),
        "winning bids",
        |_| Winners::default(),
        |state, _, auction, _| {
            let mut open = OpenAuction {
                start: auction.date_time,
                expires: auction.expires,
                reserve: auction.reserve,
                category: auction.category,
                best: None,
            };
            for (time, price) in state.early.remove(&auction.id).unwrap_or_default() {
                open.offer(time, price);
            }
            state.closing.push(Reverse((auction.expires, auction.id)));
            state.open.insert(auction.id, open);
        },
        |state, _, bid, _| match state.open.get_mut(&bid.auction) {
            Some(open) => open.offer(bid.date_time, bid.price),
            None => state
                .early
                .entry(bid.auction)
                .or_default()
                .push((bid.date_time, bid.price)),
        },
        |state, frontier, out| {
            // Every bid before `expires` has arrived once the frontier reaches it.
            while let Some(Reverse((expires, id))) = state.closing.peek().copied() {
                if expires > frontier {
                    break;
                }
                state.closing.pop();
                if let Some(auction) = state.open.remove(&id) {
                    if let Some(price) = auction.best {
                        out.push((expires - 1, (auction.category, price)));
                    }
                }
            }
            // An auction not seen yet starts at or after the frontier, so earlier
            // bids cannot win it.
            state.early.retain(|_, bids| {
                bids.retain(|(time, _)| *time >= frontier);
                !bids.is_empty()
            });
        },
    );
    winners.key_by(|(category, _)| *category).aggregate(
        "average price",
        PriceSum::default,
        // Saturating, like every built-in sum: never a wrapped, small average.
        |sum, _, (_, price)| {
            sum.sum = sum.sum.saturating_add(*price);
            sum.count = sum.count.saturating_add(1);
        },
        |sum, other| {
            sum.sum = sum.sum.saturating_add(other.sum);
            sum.count = sum.count.saturating_add(other.count);
        },
        |category, sum| Q4 {
            category: *category,
            average: sum.sum / sum.count.max(1),
        },
    )
}

/// The hottest auctions of one window: the most bids, and every auction with that many.
#[derive(Clone, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Hottest {
    /// The most bids any auction got.
    pub bids: u64,
    /// The auctions that got that many.
    pub auctions: Vec<u64>,
}

impl Hottest {
    fn offer(&mut self, auction: u64, bids: u64) {
        if bids > self.bids {
            self.bids = bids;
            self.auctions.clear();
        }
        if bids == self.bids {
            self.auctions.push(auction);
        }
    }
}

/// Buckets of auctions whose bids q5's first stage counts apart.
const Q5_BUCKETS: u64 = 64;

/// The bid count of each auction of one bucket in one window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct BucketCounts {
    /// Bids per auction.
    pub counts: FxHashMap<u64, u64>,
}

impl BucketCounts {
    fn absorb(&mut self, other: BucketCounts) {
        for (auction, bids) in other.counts {
            let count = self.counts.entry(auction).or_default();
            *count = count.saturating_add(bids);
        }
    }

    /// The auctions with the most bids, with that count.
    fn hottest(&self) -> Hottest {
        let mut hottest = Hottest::default();
        for (&auction, &bids) in &self.counts {
            hottest.offer(auction, bids);
        }
        hottest
    }
}

/// q5: per sliding window, the auctions with the most bids.
pub fn q5(events: &Stream<Event>) -> Stream<Q5> {
    let slide = TEN_SECONDS / 5;
    // The first stage keys bids by a bucket of their auction and counts per auction
    // inside it: a window then fires each bucket's hottest auctions (one row per bucket,
    // more on a tie) rather than one row per auction that had bids (thousands), which
    // the window's output waited for.
    let counts = bids(events)
        .key_by(|bid: &Bid| bid.auction % Q5_BUCKETS)
        .window(
            "bids per auction",
            Windows::Sliding {
                size: TEN_SECONDS,
                slide,
            },
            BucketCounts::default,
            |bucket, _, _, bid| {
                let count = bucket.counts.entry(bid.auction).or_default();
                *count = count.saturating_add(1);
            },
            BucketCounts::absorb,
            |_, window, bucket, out| {
                let hottest = bucket.hottest();
                out.extend(
                    hottest
                        .auctions
                        .into_iter()
                        .map(|auction| (auction, window, hottest.bids)),
                );
            },
        );
    // A count comes out at its window's end − 1, which is in the tumbling window of the
    // slide's width that ends with it: it fires at the same watermark.
    counts.key_by(|(_, window, _)| window.end).window(
        "hottest",
        Windows::Tumbling { size: slide },
        Hottest::default,
        |hottest, _, _, (auction, _, bids)| hottest.offer(*auction, *bids),
        |hottest, other| {
            for auction in other.auctions {
                hottest.offer(auction, other.bids);
            }
        },
        |window_end, _, mut hottest, out| {
            hottest.auctions.sort_unstable();
            for auction in hottest.auctions {
                out.push(Q5 {
                    window_end: *window_end,
                    auction,
                    bids: hottest.bids,
                });
            }
        },
    )
}

/// A group of bids' candidates for a window's highest bid (the bids of one bucket of
/// auctions, then of every bucket): those inside the window with the highest price, and
/// those exactly at its end that could still match the window's highest price.
///
/// The window's highest price is taken over the bids inside it (`start <= t < end`),
/// across every auction; a bid at exactly `end` is output too when its price equals it.
/// So an edge bid matters only if its price is that maximum, which one group cannot
/// know: every edge bid priced at least the group's own inside maximum is kept (a
/// lower one can never match), however many other bids share its millisecond. They are
/// the bids of one millisecond, so few.
#[derive(Clone, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct HighestBids {
    /// Highest price inside the window.
    pub inside_price: u64,
    /// The bids inside at that price.
    pub inside: Vec<Q7>,
    /// The bids at the window's end priced at least `inside_price` (every one while
    /// `inside` is empty).
    pub edge: Vec<Q7>,
}

fn keep_highest(price: &mut u64, bids: &mut Vec<Q7>, candidate: Q7) {
    if bids.is_empty() || candidate.price > *price {
        *price = candidate.price;
        bids.clear();
    }
    if candidate.price == *price {
        bids.push(candidate);
    }
}

impl HighestBids {
    fn add_inside(&mut self, bid: Q7) {
        keep_highest(&mut self.inside_price, &mut self.inside, bid);
        let floor = self.inside_price;
        self.edge.retain(|edge| edge.price >= floor);
    }

    fn add_edge(&mut self, bid: Q7) {
        if self.inside.is_empty() || bid.price >= self.inside_price {
            self.edge.push(bid);
        }
    }

    fn absorb(&mut self, other: HighestBids) {
        for bid in other.inside {
            self.add_inside(bid);
        }
        for bid in other.edge {
            self.add_edge(bid);
        }
    }
}

/// Buckets of auctions whose highest bids q7's first stage keeps apart.
const Q7_BUCKETS: u64 = 64;

/// q7: per tumbling window, the bids with the window's highest price (end edge
/// inclusive).
pub fn q7(events: &Stream<Event>) -> Stream<Q7> {
    let spec = WindowSpec {
        windows: Windows::Tumbling { size: TEN_SECONDS },
        inclusive_end: true,
        any_order: false,
    };
    // The first stage keys bids by a bucket of their auction, not the auction itself:
    // its state per key is the highest bids so far, which is as right for a bucket as for
    // one auction, and a window then fires one row per bucket rather than one per auction
    // that had bids (thousands), which the window's output waited for.
    let candidates = bids(events)
        .key_by(|bid: &Bid| bid.auction % Q7_BUCKETS)
        .window(
            "highest per bucket",
            spec,
            HighestBids::default,
            |highest, window, time, bid| {
                let row = Q7 {
                    window_end: window.end,
                    auction: bid.auction,
                    bidder: bid.bidder,
                    price: bid.price,
                    date_time: time,
                };
                if time == window.end {
                    highest.add_edge(row);
                } else {
                    highest.add_inside(row);
                }
            },
            HighestBids::absorb,
            |_, window, highest, out| out.push((window.end, highest)),
        );
    // Candidates come out at their window's end: the window of the same end (inclusive)
    // collects them, and fires at the same watermark.
    candidates.key_by(|(end, _)| *end).window(
        "highest",
        spec,
        HighestBids::default,
        |highest, window, _, (end, candidates)| {
            if *end == window.end {
                highest.absorb(candidates.clone());
            }
        },
        HighestBids::absorb,
        |_, _, highest, out| {
            if highest.inside.is_empty() {
                return;
            }
            let price = highest.inside_price;
            let mut rows = highest.inside;
            rows.extend(highest.edge.into_iter().filter(|bid| bid.price == price));
            rows.sort();
            out.extend(rows);
        },
    )
}

/// What q8 reads of an event: a person's registration, or that an auction's seller
/// opened one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SellerEvent {
    /// A person registered: their id and name.
    Registered(u64, String),
    /// The person with this id opened an auction.
    Opened(u64),
}

impl SellerEvent {
    fn person(&self) -> u64 {
        match self {
            Self::Registered(id, _) | Self::Opened(id) => *id,
        }
    }
}

/// q8's state of one person in one window: the names they registered under (once each,
/// NEXMark gives one), whether they opened an auction, and which names went out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct NewSeller {
    /// Each name registered, and whether its row went out.
    pub names: Vec<(String, bool)>,
    /// An auction of theirs came.
    pub opened: bool,
}

impl NewSeller {
    fn fold(&mut self, event: &SellerEvent) {
        match event {
            SellerEvent::Registered(_, name) => {
                if !self.names.iter().any(|(known, _)| known == name) {
                    self.names.push((name.clone(), self.opened));
                }
            }
            SellerEvent::Opened(_) => {
                self.opened = true;
                for (_, out) in &mut self.names {
                    *out = true;
                }
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.opened |= other.opened;
        for (name, out) in other.names {
            match self.names.iter_mut().find(|(known, _)| *known == name) {
                Some((_, went)) => *went |= out,
                None => self.names.push((name, out)),
            }
        }
    }

    /// The rows `event` completes, given the state before it: a registration after an
    /// auction, or the first auction after registrations.
    fn completed(&self, event: &SellerEvent, window_start: Time, out: &mut Vec<Q8>) {
        let row = |name: &str| Q8 {
            window_start,
            person: event.person(),
            name: name.to_owned(),
        };
        match event {
            SellerEvent::Registered(_, name) => {
                if self.opened && !self.names.iter().any(|(known, _)| known == name) {
                    out.push(row(name));
                }
            }
            SellerEvent::Opened(_) => {
                if !self.opened {
                    out.extend(self.names.iter().map(|(name, _)| row(name)));
                }
            }
        }
    }
}

/// q8: people who created an auction in the window they registered in. Each row goes
/// out as soon as both the registration and an auction are in (whichever comes second),
/// not when the window closes: a new seller is known at once. The window's state is
/// exclusive to its partition, so that the two always meet there; what fires with the
/// window is only a row no record put out, which such a state never leaves.
pub fn q8(events: &Stream<Event>) -> Stream<Q8> {
    let sellers = events.flat_map("people and sellers", |event| match event {
        Event::Person(person) => Some(SellerEvent::Registered(person.id, person.name)),
        Event::Auction(auction) => Some(SellerEvent::Opened(auction.seller)),
        Event::Bid(_) => None,
    });
    sellers.key_by(SellerEvent::person).window_eager(
        "new sellers",
        Windows::Tumbling { size: TEN_SECONDS },
        NewSeller::default,
        |seller, _, _, event| seller.fold(event),
        NewSeller::merge,
        |_, window, seller, event, out| seller.completed(event, window.start, out),
        |person, window, seller, out| {
            if seller.opened {
                out.extend(
                    seller
                        .names
                        .into_iter()
                        .filter(|(_, went)| !went)
                        .map(|(name, _)| Q8 {
                            window_start: window.start,
                            person: *person,
                            name,
                        }),
                );
            }
        },
    )
}

/// q11: each bidder's sessions and their bid counts.
pub fn q11(events: &Stream<Event>) -> Stream<Q11> {
    bids(events).key_by(|bid: &Bid| bid.bidder).window(
        "sessions",
        Windows::Session { gap: TEN_SECONDS },
        || 0u64,
        |bids, _, _, _| *bids = bids.saturating_add(1),
        |bids, other| *bids = bids.saturating_add(other),
        |bidder, window, bids, out| {
            out.push(Q11 {
                bidder: *bidder,
                start: window.start,
                end: window.end,
                bids,
            })
        },
    )
}

/// A query's output stream, whatever its row type.
pub enum Query {
    /// q0 and q1.
    Bids(Stream<Bid>),
    /// q2.
    Q2(Stream<Q2>),
    /// q3.
    Q3(Stream<Q3>),
    /// q4.
    Q4(Stream<Q4>),
    /// q5.
    Q5(Stream<Q5>),
    /// q7.
    Q7(Stream<Q7>),
    /// q8.
    Q8(Stream<Q8>),
    /// q11.
    Q11(Stream<Q11>),
}

fn debug_rows<T: Data + std::fmt::Debug>(stream: &Stream<T>, name: &str) -> Collected<String> {
    stream.map("format", |row| format!("{row:?}")).collect(name)
}

impl Query {
    /// Builds query `name` (one of [`QUERIES`]) on `events`; `None` for an unknown name.
    pub fn build(name: &str, events: &Stream<Event>) -> Option<Query> {
        Some(match name {
            "q0" => Query::Bids(q0(events)),
            "q1" => Query::Bids(q1(events)),
            "q2" => Query::Q2(q2(events)),
            "q3" => Query::Q3(q3(events)),
            "q4" => Query::Q4(q4(events)),
            "q5" => Query::Q5(q5(events)),
            "q7" => Query::Q7(q7(events)),
            "q8" => Query::Q8(q8(events)),
            "q11" => Query::Q11(q11(events)),
            _ => return None,
        })
    }

    /// Ends the query in a latency recorder (which also counts its outputs).
    pub fn record_latency(&self, name: &str) -> LatencyRecorder {
        match self {
            Query::Bids(s) => s.count(name),
            Query::Q2(s) => s.count(name),
            Query::Q3(s) => s.count(name),
            Query::Q4(s) => s.count(name),
            Query::Q5(s) => s.count(name),
            Query::Q7(s) => s.count(name),
            Query::Q8(s) => s.count(name),
            Query::Q11(s) => s.count(name),
        }
    }

    /// Ends the query in a sink that collects its rows formatted with `{:?}`.
    pub fn collect_debug(&self, name: &str) -> Collected<String> {
        match self {
            Query::Bids(s) => debug_rows(s, name),
            Query::Q2(s) => debug_rows(s, name),
            Query::Q3(s) => debug_rows(s, name),
            Query::Q4(s) => debug_rows(s, name),
            Query::Q5(s) => debug_rows(s, name),
            Query::Q7(s) => debug_rows(s, name),
            Query::Q8(s) => debug_rows(s, name),
            Query::Q11(s) => debug_rows(s, name),
        }
    }
}
