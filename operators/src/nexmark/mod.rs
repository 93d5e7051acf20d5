//! NEXMark: the auction-site benchmark. [`events`] generates its events
//! deterministically; [`output`] defines each query's result rows and semantics;
//! [`queries`] builds q0, q1, q2, q3, q4, q5, q7, q8 and q11 as apps.

pub mod events;
pub mod output;
pub mod queries;
