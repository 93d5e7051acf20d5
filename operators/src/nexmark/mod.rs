//! NEXMark: the auction-site benchmark. [`events`] generates its events
//! deterministically; [`output`] defines each query's result rows and semantics.

pub mod events;
pub mod output;
