//! NEXMark as typed rows: the events as rows of one schema ([`event_schema`],
//! [`event_row`]), for TOML pipelines over the NEXMark source, and each built-in query's
//! output as rows with named fields ([`Query::rows`]), for its sink.
//!
//! An event's row has every field of the three kinds; those of the other kinds are NULL.
//! `event` says which kind it is (`'person'`, `'auction'` or `'bid'`), `date_time` is its
//! event time. A person's `id` is `person_id`; an auction's `id` is `auction_id`; a bid's
//! auction is `auction`.

use super::schema::Schema;
use super::value::{Row, Type, Value};
use crate::dataflow::Stream;
use crate::nexmark::events::Event;
use crate::nexmark::queries::Query;

/// The fields of a NEXMark event's row, in order.
pub const EVENT_FIELDS: [(&str, Type); 21] = [
    ("event", Type::String),
    ("date_time", Type::Timestamp),
    ("person_id", Type::U64),
    ("name", Type::String),
    ("email", Type::String),
    ("credit_card", Type::String),
    ("city", Type::String),
    ("state", Type::String),
    ("auction_id", Type::U64),
    ("item_name", Type::String),
    ("description", Type::String),
    ("initial_bid", Type::U64),
    ("reserve", Type::U64),
    ("expires", Type::Timestamp),
    ("seller", Type::U64),
    ("category", Type::U64),
    ("auction", Type::U64),
    ("bidder", Type::U64),
    ("price", Type::U64),
    ("channel", Type::String),
    ("url", Type::String),
];

/// The schema of NEXMark events as rows.
///
/// ```
/// use dirigo_operators::nexmark::events::NexmarkSpec;
/// use dirigo_operators::typed::nexmark::{event_row, event_schema};
/// use dirigo_operators::typed::Value;
///
/// let schema = event_schema();
/// let event = NexmarkSpec { events: 1, ..NexmarkSpec::default() }.generate().remove(0);
/// let row = event_row(event);
/// assert_eq!(row.len(), schema.len());
/// assert_eq!(row[schema.index_of("event").unwrap()], Value::Str("person".into()));
/// assert!(row[schema.index_of("price").unwrap()].is_null());
/// ```
pub fn event_schema() -> Schema {
    Schema::new(EVENT_FIELDS)
}

fn ts(ms: u64) -> Value {
    Value::Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// An event as a row of [`event_schema`].
pub fn event_row(event: Event) -> Row {
    let mut row = vec![Value::Null; EVENT_FIELDS.len()];
    match event {
        Event::Person(p) => {
            row[0] = Value::Str("person".into());
            row[1] = ts(p.date_time);
            row[2] = Value::U64(p.id);
            row[3] = Value::Str(p.name);
            row[4] = Value::Str(p.email);
            row[5] = Value::Str(p.credit_card);
            row[6] = Value::Str(p.city);
            row[7] = Value::Str(p.state);
        }
        Event::Auction(a) => {
            row[0] = Value::Str("auction".into());
            row[1] = ts(a.date_time);
            row[8] = Value::U64(a.id);
            row[9] = Value::Str(a.item_name);
            row[10] = Value::Str(a.description);
            row[11] = Value::U64(a.initial_bid);
            row[12] = Value::U64(a.reserve);
            row[13] = ts(a.expires);
            row[14] = Value::U64(a.seller);
            row[15] = Value::U64(a.category);
        }
        Event::Bid(b) => {
            row[0] = Value::Str("bid".into());
            row[1] = ts(b.date_time);
            row[16] = Value::U64(b.auction);
            row[17] = Value::U64(b.bidder);
            row[18] = Value::U64(b.price);
            row[19] = Value::Str(b.channel);
            row[20] = Value::Str(b.url);
        }
    }
    row
}

fn u(x: u64) -> Value {
    Value::U64(x)
}

fn s(x: String) -> Value {
    Value::Str(x)
}

impl Query {
    /// The query's output as rows, and their schema (the output type's fields, times as
    /// `timestamp_ms`): what a sink of chosen fields writes.
    pub fn rows(&self) -> (Stream<Row>, Schema) {
        use Type::{String as S, Timestamp as T, U64};
        let bid_fields = vec![
            ("auction", U64),
            ("bidder", U64),
            ("price", U64),
            ("channel", S),
            ("url", S),
            ("date_time", T),
        ];
        match self {
            Query::Bids(stream) => (
                stream.map("rows", |b| {
                    vec![
                        u(b.auction),
                        u(b.bidder),
                        u(b.price),
                        s(b.channel),
                        s(b.url),
                        ts(b.date_time),
                    ]
                }),
                Schema::new(bid_fields),
            ),
            Query::Q2(stream) => (
                stream.map("rows", |r| vec![u(r.auction), u(r.price)]),
                Schema::new(vec![("auction", U64), ("price", U64)]),
            ),
            Query::Q3(stream) => (
                stream.map("rows", |r| {
                    vec![s(r.name), s(r.city), s(r.state), u(r.auction)]
                }),
                Schema::new(vec![
                    ("name", S),
                    ("city", S),
                    ("state", S),
                    ("auction", U64),
                ]),
            ),
            Query::Q4(stream) => (
                stream.map("rows", |r| vec![u(r.category), u(r.average)]),
                Schema::new(vec![("category", U64), ("average", U64)]),
            ),
            Query::Q5(stream) => (
                stream.map("rows", |r| vec![ts(r.window_end), u(r.auction), u(r.bids)]),
                Schema::new(vec![("window_end", T), ("auction", U64), ("bids", U64)]),
            ),
            Query::Q7(stream) => (
                stream.map("rows", |r| {
                    vec![
                        ts(r.window_end),
                        u(r.auction),
                        u(r.bidder),
                        u(r.price),
                        ts(r.date_time),
                    ]
                }),
                Schema::new(vec![
                    ("window_end", T),
                    ("auction", U64),
                    ("bidder", U64),
                    ("price", U64),
                    ("date_time", T),
                ]),
            ),
            Query::Q8(stream) => (
                stream.map("rows", |r| vec![ts(r.window_start), u(r.person), s(r.name)]),
                Schema::new(vec![("window_start", T), ("person", U64), ("name", S)]),
            ),
            Query::Q11(stream) => (
                stream.map("rows", |r| {
                    vec![u(r.bidder), ts(r.start), ts(r.end), u(r.bids)]
                }),
                Schema::new(vec![
                    ("bidder", U64),
                    ("start", T),
                    ("end", T),
                    ("bids", U64),
                ]),
            ),
        }
    }

    /// The schema of [`rows`](Self::rows) for query `name`, without building it; `None`
    /// for an unknown name.
    pub fn row_schema(name: &str) -> Option<Schema> {
        use crate::dataflow::AppBuilder;
        let app = AppBuilder::new(0, "schema");
        let events =
            app.source_iter::<Event>("events", Vec::new(), 0, crate::source::Pacing::Unpaced);
        Query::build(name, &events).map(|query| query.rows().1)
    }
}
