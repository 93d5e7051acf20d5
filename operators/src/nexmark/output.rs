//! What each NEXMark query outputs, and exactly what it means. The pipelines in
//! [`super::queries`] and the independent reference in the test suite both produce these.
//!
//! Windows are on event time (milliseconds), aligned to multiples of their slide from time
//! zero, and half-open: `[start, start + size)`, except where a query says otherwise.
//!
//! - **q0** (pass-through): every bid, unchanged ([`Bid`]).
//! - **q1** (currency conversion): every bid with `price = price * 908 / 1000` (dollars to
//!   euros, integer cents, rounded down) ([`Bid`]).
//! - **q2** (selection): `(auction, price)` of the bids whose `auction % 123 == 0`
//!   ([`Q2`]).
//! - **q3** (local item suggestion): people in states `or`, `id` or `ca` joined with
//!   auctions of category 10 on `seller == person.id`; every matching pair once, whatever
//!   the order they arrive in ([`Q3`]).
//! - **q4** (average price per category): an auction's winning price is the highest price
//!   among its bids with `auction.date_time <= bid.date_time < auction.expires` and
//!   `price >= reserve`; auctions without such a bid have no winner. Per category, the
//!   average winning price (integer, rounded down) over its closed auctions. The pipeline
//!   emits an update whenever a category's average changes (an auction closes when the
//!   watermark passes its `expires`); the result is each category's last update
//!   ([`Q4`]).
//! - **q5** (hot items): sliding windows 10 s wide, sliding by 2 s; per window, the
//!   auction(s) with the most bids (every auction that ties for the most), with that count
//!   ([`Q5`]).
//! - **q7** (highest bid): tumbling 10 s windows `[s, e)`; the window's highest price is
//!   taken over its bids, and every bid with that price and `s <= date_time <= e` is
//!   output: the window's end edge is **inclusive** for the match (as in the SQL
//!   formulation's `BETWEEN`), so a bid at exactly `e` with that price is output for this
//!   window too ([`Q7`]).
//! - **q8** (monitor new users): tumbling 10 s windows; each person who registered in a
//!   window and created an auction in the same window, once per window ([`Q8`]). A row
//!   goes out as soon as both are in, not when the window closes.
//! - **q11** (user sessions): per bidder, session windows with a 10 s gap: a bid starts a
//!   new session when it comes `>= 10 s` after the previous bid of the session. Output per
//!   session: first bid time, last bid time + 10 s, and the number of bids ([`Q11`]).

use rkyv::{Archive, Deserialize, Serialize};

pub use super::events::Bid;

/// q2's output row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Q2 {
    /// Auction id.
    pub auction: u64,
    /// Bid price, cents.
    pub price: u64,
}

/// q3's output row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Q3 {
    /// The seller's name.
    pub name: String,
    /// The seller's city.
    pub city: String,
    /// The seller's state.
    pub state: String,
    /// The auction id.
    pub auction: u64,
}

/// q4's output row: a category's average winning price.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Q4 {
    /// Category id.
    pub category: u64,
    /// Average winning price, cents, rounded down.
    pub average: u64,
}

/// q5's output row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Q5 {
    /// The window's end (exclusive), ms.
    pub window_end: u64,
    /// A hottest auction of the window.
    pub auction: u64,
    /// Its number of bids in the window.
    pub bids: u64,
}

/// q7's output row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Q7 {
    /// The window's end, ms.
    pub window_end: u64,
    /// Auction id.
    pub auction: u64,
    /// Bidder id.
    pub bidder: u64,
    /// The window's highest price, cents.
    pub price: u64,
    /// The bid's event time, ms.
    pub date_time: u64,
}

/// q8's output row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Q8 {
    /// The window's start, ms.
    pub window_start: u64,
    /// Person id.
    pub person: u64,
    /// The person's name.
    pub name: String,
}

/// q11's output row: one bidder's session.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Archive, Serialize, Deserialize)]
pub struct Q11 {
    /// Bidder id.
    pub bidder: u64,
    /// The session's first bid time, ms.
    pub start: u64,
    /// The session's last bid time + the 10 s gap, ms.
    pub end: u64,
    /// Bids in the session.
    pub bids: u64,
}
