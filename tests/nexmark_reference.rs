//! An independent reference for the NEXMark queries q0, q1, q2, q3, q4, q5, q7, q8 and
//! q11: plain, single-threaded, whole-input computations that follow the semantics written
//! in [`dirigo_operators::nexmark::output`] to the letter, for tests to compare the
//! parallel pipelines against.
//!
//! Every function takes the complete input at once, in any order (nothing assumes the
//! events are sorted by time), and returns its rows sorted ascending. At the end of the
//! input every window and every auction is closed, so each query's result is its final
//! one. The code aims to be obviously correct rather than fast.
//!
//! One point the semantics leave open is settled here: windows start at non-negative
//! multiples of their slide, so an event earlier than a window's size is in fewer
//! sliding windows (no window starts before time zero). Generated events are far from
//! time zero, where this never matters.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dirigo_operators::nexmark::events::{Auction, Event, Person};
use dirigo_operators::nexmark::output::{Bid, Q11, Q2, Q3, Q4, Q5, Q7, Q8};

/// Ten seconds, in milliseconds: the window size of q5, q7 and q8, and q11's session gap.
const TEN_SECONDS: u64 = 10_000;
/// q5's slide, milliseconds.
const Q5_SLIDE: u64 = 2_000;

fn bids(events: &[Event]) -> impl Iterator<Item = &Bid> {
    events.iter().filter_map(|event| match event {
        Event::Bid(bid) => Some(bid),
        _ => None,
    })
}

fn auctions(events: &[Event]) -> impl Iterator<Item = &Auction> {
    events.iter().filter_map(|event| match event {
        Event::Auction(auction) => Some(auction),
        _ => None,
    })
}

fn people(events: &[Event]) -> impl Iterator<Item = &Person> {
    events.iter().filter_map(|event| match event {
        Event::Person(person) => Some(person),
        _ => None,
    })
}

fn sorted<T: Ord>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort();
    rows
}

/// The start of the tumbling 10 s window that holds `time`.
fn tumbling_start(time: u64) -> u64 {
    time - time % TEN_SECONDS
}

/// q0 (pass-through): every bid, unchanged.
pub fn q0(events: &[Event]) -> Vec<Bid> {
    sorted(bids(events).cloned().collect())
}

/// q1 (currency conversion): every bid with `price = price * 908 / 1000`, rounded down.
pub fn q1(events: &[Event]) -> Vec<Bid> {
    sorted(
        bids(events)
            .map(|bid| Bid {
                price: bid.price * 908 / 1000,
                ..bid.clone()
            })
            .collect(),
    )
}

/// q2 (selection): `(auction, price)` of every bid with `auction % 123 == 0`.
pub fn q2(events: &[Event]) -> Vec<Q2> {
    sorted(
        bids(events)
            .filter(|bid| bid.auction % 123 == 0)
            .map(|bid| Q2 {
                auction: bid.auction,
                price: bid.price,
            })
            .collect(),
    )
}

/// q3 (local item suggestion): people in states `or`, `id` or `ca` joined with the
/// auctions of category 10 they sell; every matching pair once, whatever the arrival
/// order.
pub fn q3(events: &[Event]) -> Vec<Q3> {
    let mut sellers: HashMap<u64, Vec<&Person>> = HashMap::new();
    for person in people(events).filter(|p| ["or", "id", "ca"].contains(&p.state.as_str())) {
        sellers.entry(person.id).or_default().push(person);
    }
    let mut rows = Vec::new();
    for auction in auctions(events).filter(|a| a.category == 10) {
        for person in sellers.get(&auction.seller).into_iter().flatten() {
            rows.push(Q3 {
                name: person.name.clone(),
                city: person.city.clone(),
                state: person.state.clone(),
                auction: auction.id,
            });
        }
    }
    sorted(rows)
}

/// q4 (average price per category): per category, the average (rounded down) of the
/// winning prices of its auctions that have a winner. An auction's winning price is the
/// highest price among its bids with `date_time <= bid.date_time < expires` and
/// `price >= reserve`. One row per category with at least one winning auction.
pub fn q4(events: &[Event]) -> Vec<Q4> {
    let mut bids_of: HashMap<u64, Vec<&Bid>> = HashMap::new();
    for bid in bids(events) {
        bids_of.entry(bid.auction).or_default().push(bid);
    }
    // Per category: (sum of winning prices, number of winning auctions).
    let mut winners: BTreeMap<u64, (u128, u128)> = BTreeMap::new();
    for auction in auctions(events) {
        let winning = bids_of
            .get(&auction.id)
            .into_iter()
            .flatten()
            .filter(|bid| {
                auction.date_time <= bid.date_time
                    && bid.date_time < auction.expires
                    && bid.price >= auction.reserve
            })
            .map(|bid| bid.price)
            .max();
        if let Some(price) = winning {
            let entry = winners.entry(auction.category).or_default();
            entry.0 += u128::from(price);
            entry.1 += 1;
        }
    }
    winners
        .into_iter()
        .map(|(category, (sum, count))| Q4 {
            category,
            average: u64::try_from(sum / count).expect("an average of u64 prices fits a u64"),
        })
        .collect()
}

/// q5 (hot items): sliding windows 10 s wide, sliding by 2 s; per window, every auction
/// that ties for the most bids, with that count.
pub fn q5(events: &[Event]) -> Vec<Q5> {
    // Window start -> auction -> bids.
    let mut counts: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    for bid in bids(events) {
        let last_start = bid.date_time - bid.date_time % Q5_SLIDE;
        let mut start = last_start;
        // Every window `[start, start + 10 s)` that holds the bid and starts at or after 0.
        while start + TEN_SECONDS > bid.date_time {
            *counts
                .entry(start)
                .or_default()
                .entry(bid.auction)
                .or_default() += 1;
            match start.checked_sub(Q5_SLIDE) {
                Some(earlier) => start = earlier,
                None => break,
            }
        }
    }
    let mut rows = Vec::new();
    for (start, per_auction) in counts {
        let most = per_auction.values().copied().max().unwrap_or(0);
        for (&auction, &bids) in &per_auction {
            if bids == most {
                rows.push(Q5 {
                    window_end: start + TEN_SECONDS,
                    auction,
                    bids,
                });
            }
        }
    }
    sorted(rows)
}

/// q7 (highest bid): tumbling 10 s windows `[s, e)`; the highest price over the window's
/// bids, and every bid with that price and `s <= date_time <= e` (end edge inclusive for
/// the match).
pub fn q7(events: &[Event]) -> Vec<Q7> {
    let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
    for bid in bids(events) {
        let top = highest.entry(tumbling_start(bid.date_time)).or_default();
        *top = (*top).max(bid.price);
    }
    let mut rows = Vec::new();
    for bid in bids(events) {
        let own = tumbling_start(bid.date_time);
        // The bid's own window, and the previous one when the bid sits on its end edge.
        let mut windows = vec![own];
        if bid.date_time == own && own >= TEN_SECONDS {
            windows.push(own - TEN_SECONDS);
        }
        for start in windows {
            if highest.get(&start) == Some(&bid.price) {
                rows.push(Q7 {
                    window_end: start + TEN_SECONDS,
                    auction: bid.auction,
                    bidder: bid.bidder,
                    price: bid.price,
                    date_time: bid.date_time,
                });
            }
        }
    }
    sorted(rows)
}

/// q8 (monitor new users): tumbling 10 s windows; each person who registered in a window
/// and created an auction in the same window, once per window.
pub fn q8(events: &[Event]) -> Vec<Q8> {
    let selling: BTreeSet<(u64, u64)> = auctions(events)
        .map(|auction| (tumbling_start(auction.date_time), auction.seller))
        .collect();
    let rows: BTreeSet<Q8> = people(events)
        .filter(|person| selling.contains(&(tumbling_start(person.date_time), person.id)))
        .map(|person| Q8 {
            window_start: tumbling_start(person.date_time),
            person: person.id,
            name: person.name.clone(),
        })
        .collect();
    rows.into_iter().collect()
}

/// q11 (user sessions): per bidder, sessions with a 10 s gap (a bid `>= 10 s` after the
/// session's previous bid starts a new one); per session its first bid time, its last bid
/// time + 10 s, and its number of bids.
pub fn q11(events: &[Event]) -> Vec<Q11> {
    let mut times: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for bid in bids(events) {
        times.entry(bid.bidder).or_default().push(bid.date_time);
    }
    let mut rows = Vec::new();
    for (bidder, mut times) in times {
        times.sort_unstable();
        let mut session: Option<(u64, u64, u64)> = None; // (first, last, bids)
        for time in times {
            session = match session {
                Some((first, last, bids)) if time - last < TEN_SECONDS => {
                    Some((first, time, bids + 1))
                }
                Some((first, last, bids)) => {
                    rows.push(Q11 {
                        bidder,
                        start: first,
                        end: last + TEN_SECONDS,
                        bids,
                    });
                    Some((time, time, 1))
                }
                None => Some((time, time, 1)),
            };
        }
        if let Some((first, last, bids)) = session {
            rows.push(Q11 {
                bidder,
                start: first,
                end: last + TEN_SECONDS,
                bids,
            });
        }
    }
    sorted(rows)
}

fn formatted<T: std::fmt::Debug>(rows: Vec<T>) -> Vec<String> {
    rows.iter().map(|row| format!("{row:?}")).collect()
}

/// Runs the query named `name` (`"q0"`, `"q1"`, `"q2"`, `"q3"`, `"q4"`, `"q5"`, `"q7"`,
/// `"q8"` or `"q11"`) and returns its sorted rows formatted with `{:?}`; `None` for any
/// other name.
pub fn query(name: &str, events: &[Event]) -> Option<Vec<String>> {
    Some(match name {
        "q0" => formatted(q0(events)),
        "q1" => formatted(q1(events)),
        "q2" => formatted(q2(events)),
        "q3" => formatted(q3(events)),
        "q4" => formatted(q4(events)),
        "q5" => formatted(q5(events)),
        "q7" => formatted(q7(events)),
        "q8" => formatted(q8(events)),
        "q11" => formatted(q11(events)),
        _ => return None,
    })
}

/// A hand-made bid, for tests that build their own events.
pub fn bid(auction: u64, bidder: u64, price: u64, date_time: u64) -> Event {
    Event::Bid(Bid {
        auction,
        bidder,
        price,
        channel: "channel".into(),
        url: format!("https://example.com/{auction}/{bidder}/{date_time}"),
        date_time,
    })
}

/// A hand-made person, for tests that build their own events.
pub fn person(id: u64, state: &str, date_time: u64) -> Event {
    Event::Person(Person {
        id,
        name: format!("person {id}"),
        email: format!("{id}@example.com"),
        credit_card: "1234".into(),
        city: format!("city {id}"),
        state: state.into(),
        date_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dirigo_operators::nexmark::events::NexmarkSpec;

    const QUERIES: [&str; 9] = ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q11"];

    fn auction(id: u64, seller: u64, category: u64, date_time: u64) -> Auction {
        Auction {
            id,
            item_name: format!("item {id}"),
            description: "an item".into(),
            initial_bid: 1,
            reserve: 1,
            date_time,
            expires: date_time + 60_000,
            seller,
            category,
        }
    }

    fn q7_row(window_end: u64, event: &Event) -> Q7 {
        let Event::Bid(bid) = event else {
            panic!("not a bid")
        };
        Q7 {
            window_end,
            auction: bid.auction,
            bidder: bid.bidder,
            price: bid.price,
            date_time: bid.date_time,
        }
    }

    #[test]
    fn q0_q1_q2_pass_convert_and_select() {
        let events = vec![bid(246, 1, 1_001, 5), bid(7, 2, 999, 3), person(1, "or", 1)];
        let all = q0(&events);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].auction, 7);
        let converted: Vec<(u64, u64)> = q1(&events).iter().map(|b| (b.auction, b.price)).collect();
        // 999 * 908 / 1000 = 907.09 and 1001 * 908 / 1000 = 908.9: rounded down.
        assert_eq!(converted, vec![(7, 907), (246, 908)]);
        assert_eq!(
            q2(&events),
            vec![Q2 {
                auction: 246,
                price: 1_001
            }]
        );
    }

    #[test]
    fn q3_joins_whatever_the_arrival_order() {
        let events = vec![
            // The auction comes before its seller.
            Event::Auction(auction(100, 5, 10, 1_000)),
            Event::Auction(auction(101, 5, 11, 1_000)), // wrong category
            Event::Auction(auction(102, 6, 10, 1_000)), // seller in the wrong state
            person(5, "or", 2_000),
            person(6, "wa", 2_000),
            person(7, "ca", 500),
            Event::Auction(auction(103, 7, 10, 3_000)),
        ];
        let auctions: Vec<(u64, String)> = q3(&events)
            .into_iter()
            .map(|row| (row.auction, row.state))
            .collect();
        assert_eq!(auctions, vec![(100, "or".into()), (103, "ca".into())]);
        let row = &q3(&events)[0];
        assert_eq!(
            (row.name.as_str(), row.city.as_str()),
            ("person 5", "city 5")
        );
    }

    #[test]
    fn q4_counts_only_bids_inside_the_auction_and_above_reserve() {
        let with = |id, category, reserve| {
            Event::Auction(Auction {
                reserve,
                expires: 2_000,
                ..auction(id, 1, category, 1_000)
            })
        };
        let events = vec![
            bid(1, 9, 150, 1_500), // before its auction arrives: still counts
            with(1, 10, 100),
            bid(1, 9, 1_000, 999), // before the auction starts
            bid(1, 9, 900, 2_000), // at expires
            bid(1, 9, 99, 1_500),  // below reserve
            bid(1, 9, 120, 1_999),
            bid(1, 9, 100, 1_000), // at the start, exactly the reserve: counts, but loses
            with(2, 10, 100),
            bid(2, 9, 201, 1_000),
            with(3, 11, 100), // only excluded bids: no winner, no row for category 11
            bid(3, 9, 500, 2_000),
            bid(3, 9, 500, 999),
            bid(3, 9, 50, 1_500),
            bid(4, 9, 700, 1_500), // no such auction
        ];
        assert_eq!(
            q4(&events),
            vec![Q4 {
                category: 10,
                average: 175 // (150 + 201) / 2, rounded down
            }]
        );
    }

    #[test]
    fn q5_outputs_every_tie() {
        let events = vec![
            bid(1, 9, 10, 100_500),
            bid(2, 9, 10, 100_500),
            bid(1, 9, 10, 103_000),
        ];
        let mut expected = Vec::new();
        // Windows ending 102 000 .. 110 000 hold both bids at 100 500; those ending at
        // 104 000 .. 112 000 hold the bid at 103 000.
        for end in (102_000..=112_000).step_by(2_000) {
            let first = end <= 110_000;
            let second = end >= 104_000;
            if first && !second {
                expected.push(Q5 {
                    window_end: end,
                    auction: 1,
                    bids: 1,
                });
                expected.push(Q5 {
                    window_end: end,
                    auction: 2,
                    bids: 1,
                });
            } else {
                expected.push(Q5 {
                    window_end: end,
                    auction: 1,
                    bids: u64::from(first) + u64::from(second),
                });
            }
        }
        assert_eq!(q5(&events), expected);
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(q5(&reversed), expected);
    }

    #[test]
    fn q5_has_no_windows_before_time_zero() {
        let ends: Vec<u64> = q5(&[bid(1, 9, 10, 4_500)])
            .iter()
            .map(|row| row.window_end)
            .collect();
        assert_eq!(ends, vec![10_000, 12_000, 14_000]);
    }

    #[test]
    fn q7_end_edge_bid_that_is_also_the_max_of_its_own_window() {
        let early = bid(1, 1, 100, 15_000);
        let edge = bid(2, 2, 100, 20_000);
        let later = bid(3, 3, 50, 25_000);
        let events = vec![later.clone(), edge.clone(), early.clone()];
        assert_eq!(
            q7(&events),
            vec![
                q7_row(20_000, &early),
                q7_row(20_000, &edge),
                q7_row(30_000, &edge),
            ]
        );
    }

    #[test]
    fn q7_end_edge_bid_that_is_not_the_max_of_its_own_window() {
        let early = bid(1, 1, 100, 15_000);
        let edge = bid(2, 2, 100, 20_000);
        let later = bid(3, 3, 200, 29_999);
        let beyond = bid(4, 4, 200, 30_001); // past the next edge: its own window only
        let events = vec![beyond.clone(), later.clone(), edge.clone(), early.clone()];
        assert_eq!(
            q7(&events),
            vec![
                q7_row(20_000, &early),
                q7_row(20_000, &edge),
                q7_row(30_000, &later),
                q7_row(40_000, &beyond),
            ]
        );
    }

    #[test]
    fn q7_edge_bid_needs_bids_inside_the_earlier_window() {
        let edge = bid(2, 2, 100, 20_000);
        assert_eq!(q7(std::slice::from_ref(&edge)), vec![q7_row(30_000, &edge)]);
    }

    #[test]
    fn q8_needs_person_and_auction_in_the_same_window() {
        let events = vec![
            Event::Auction(auction(1, 1, 10, 10_000)),
            person(1, "or", 9_999), // the next window's auction does not count
            Event::Auction(auction(2, 2, 10, 19_999)),
            Event::Auction(auction(3, 2, 10, 11_000)),
            person(2, "wa", 10_500),
            person(3, "wa", 10_500), // no auction at all
        ];
        assert_eq!(
            q8(&events),
            vec![Q8 {
                window_start: 10_000,
                person: 2,
                name: "person 2".into(),
            }]
        );
    }

    #[test]
    fn q11_gap_of_exactly_ten_seconds_starts_a_new_session() {
        let events = vec![
            bid(1, 2, 10, 9_999),
            bid(1, 1, 10, 10_000),
            bid(1, 2, 10, 0),
            bid(1, 1, 10, 0),
            bid(1, 1, 10, 25_000),
            bid(1, 1, 10, 20_000),
        ];
        assert_eq!(
            q11(&events),
            vec![
                Q11 {
                    bidder: 1,
                    start: 0,
                    end: 10_000,
                    bids: 1,
                },
                Q11 {
                    bidder: 1,
                    start: 10_000,
                    end: 20_000,
                    bids: 1,
                },
                Q11 {
                    bidder: 1,
                    start: 20_000,
                    end: 35_000,
                    bids: 2,
                },
                Q11 {
                    bidder: 2,
                    start: 0,
                    end: 19_999,
                    bids: 2,
                },
            ]
        );
    }

    #[test]
    fn query_by_name() {
        let events = vec![bid(246, 1, 1_000, 5)];
        assert_eq!(
            query("q2", &events),
            Some(vec!["Q2 { auction: 246, price: 1000 }".to_string()])
        );
        assert_eq!(query("q6", &events), None);
        assert_eq!(query("nope", &events), None);
    }

    #[test]
    fn generated_events_give_rows_for_every_query_in_any_order() {
        let events = NexmarkSpec {
            events: 20_000,
            ..Default::default()
        }
        .generate();
        let mut shuffled = events.clone();
        shuffled.reverse();
        // A fixed interleaving, far from time order.
        let shuffled: Vec<Event> = (0..shuffled.len())
            .map(|i| shuffled[(i * 7_919) % shuffled.len()].clone())
            .collect();
        assert_eq!(
            shuffled.iter().collect::<BTreeSet<_>>(),
            events.iter().collect::<BTreeSet<_>>()
        );
        for name in QUERIES {
            let rows = query(name, &events).expect("a known query");
            println!("{name}: {} rows", rows.len());
            assert!(!rows.is_empty(), "{name} has no rows");
            assert_eq!(
                query(name, &shuffled),
                Some(rows),
                "{name} depends on order"
            );
        }
        let bids = events.iter().filter(|e| matches!(e, Event::Bid(_))).count();
        assert_eq!(q0(&events).len(), bids);
        assert_eq!(q1(&events).len(), bids);
    }
}
