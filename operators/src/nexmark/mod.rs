//! NEXMark: the auction-site benchmark. [`events`] generates its events deterministically.

pub mod events;
