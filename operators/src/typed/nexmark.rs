//! NEXMark as typed rows: the events as rows of one schema ([`event_schema`],
//! [`event_row`], or of the fields a pipeline reads: [`EventFields`]), for TOML pipelines over the NEXMark source, and each built-in query's
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
    EventFields::all().row(event)
}

/// Which of the events' fields a pipeline reads, and where they go in its rows: a
/// pipeline over a few fields gets rows of those alone (the others are never built,
/// copied or kept in state).
///
/// ```
/// use dirigo_operators::nexmark::events::NexmarkSpec;
/// use dirigo_operators::typed::nexmark::{event_schema, EventFields};
/// use dirigo_operators::typed::Value;
///
/// let schema = event_schema();
/// let wanted = ["event", "name"].map(|name| schema.index_of(name).unwrap());
/// let fields = EventFields::new(&wanted);
/// assert_eq!(fields.schema().names(), "event, name");
/// let event = NexmarkSpec { events: 1, ..NexmarkSpec::default() }.generate().remove(0);
/// let row = fields.row(event);
/// assert_eq!(row.len(), 2);
/// assert_eq!(row[0], Value::Str("person".into()));
/// ```
#[derive(Clone, Debug)]
pub struct EventFields {
    /// Per field of [`EVENT_FIELDS`], its place in the row, if kept.
    places: [Option<usize>; EVENT_FIELDS.len()],
    kept: Vec<usize>,
    /// Only events of this kind (`"person"`, `"auction"` or `"bid"`) are wanted, and
    /// their `event` field is left NULL: what a pipeline whose first filter keeps one kind
    /// asks of its source, so that it builds no row (nor text) the filter would drop.
    only: Option<&'static str>,
}

impl EventFields {
    /// Every field, in [`event_schema`]'s order.
    pub fn all() -> Self {
        Self::new(&(0..EVENT_FIELDS.len()).collect::<Vec<_>>())
    }

    /// The fields at `positions` of [`event_schema`] (in increasing order, each once).
    pub fn new(positions: &[usize]) -> Self {
        let mut places = [None; EVENT_FIELDS.len()];
        let mut kept = Vec::with_capacity(positions.len());
        for &at in positions {
            if at < EVENT_FIELDS.len() && places[at].is_none() {
                places[at] = Some(kept.len());
                kept.push(at);
            }
        }
        Self {
            places,
            kept,
            only: None,
        }
    }

    /// The same fields of the events of one kind alone (`"person"`, `"auction"` or
    /// `"bid"`; `None` for another name), with `event` NULL: [`keeps`](Self::keeps)
    /// says which events to turn into rows.
    ///
    /// ```
    /// use dirigo_operators::nexmark::events::NexmarkSpec;
    /// use dirigo_operators::typed::nexmark::EventFields;
    /// use dirigo_operators::typed::Value;
    ///
    /// let bids = EventFields::all().only("bid").unwrap();
    /// let events = NexmarkSpec { events: 50, ..NexmarkSpec::default() }.generate();
    /// let kept: Vec<_> = events.into_iter().filter(|e| bids.keeps(e)).collect();
    /// assert!(!kept.is_empty() && kept.len() < 50);
    /// assert_eq!(bids.row(kept[0].clone())[0], Value::Null);
    /// ```
    pub fn only(mut self, kind: &str) -> Option<Self> {
        self.only = Some(match kind {
            "person" => "person",
            "auction" => "auction",
            "bid" => "bid",
            _ => return None,
        });
        Some(self)
    }

    /// Whether `event` is of the kind wanted (every one without [`only`](Self::only)).
    pub fn keeps(&self, event: &Event) -> bool {
        matches!(
            (self.only, event),
            (None, _)
                | (Some("person"), Event::Person(_))
                | (Some("auction"), Event::Auction(_))
                | (Some("bid"), Event::Bid(_))
        )
    }

    /// The schema of the rows: the kept fields, in order.
    pub fn schema(&self) -> Schema {
        Schema::new(self.kept.iter().map(|&at| EVENT_FIELDS[at]))
    }

    /// `event` as a row of the kept fields.
    pub fn row(&self, event: Event) -> Row {
        self.row_of(&event)
    }

    /// `event` as a row of the kept fields, copying only those (the text of the others
    /// is never copied: a source reading shared events clones no whole event).
    pub fn row_of(&self, event: &Event) -> Row {
        let mut row = vec![Value::Null; self.kept.len()];
        let only = self.only.is_some();
        let mut set = |field: usize, value: &mut dyn FnMut() -> Value| {
            if field == 0 && only {
                return;
            }
            if let Some(at) = self.places[field] {
                row[at] = value();
            }
        };
        match event {
            Event::Person(p) => {
                set(0, &mut || Value::Str("person".into()));
                set(1, &mut || ts(p.date_time));
                set(2, &mut || Value::U64(p.id));
                set(3, &mut || Value::Str(p.name.clone()));
                set(4, &mut || Value::Str(p.email.clone()));
                set(5, &mut || Value::Str(p.credit_card.clone()));
                set(6, &mut || Value::Str(p.city.clone()));
                set(7, &mut || Value::Str(p.state.clone()));
            }
            Event::Auction(a) => {
                set(0, &mut || Value::Str("auction".into()));
                set(1, &mut || ts(a.date_time));
                set(8, &mut || Value::U64(a.id));
                set(9, &mut || Value::Str(a.item_name.clone()));
                set(10, &mut || Value::Str(a.description.clone()));
                set(11, &mut || Value::U64(a.initial_bid));
                set(12, &mut || Value::U64(a.reserve));
                set(13, &mut || ts(a.expires));
                set(14, &mut || Value::U64(a.seller));
                set(15, &mut || Value::U64(a.category));
            }
            Event::Bid(b) => {
                set(0, &mut || Value::Str("bid".into()));
                set(1, &mut || ts(b.date_time));
                set(16, &mut || Value::U64(b.auction));
                set(17, &mut || Value::U64(b.bidder));
                set(18, &mut || Value::U64(b.price));
                set(19, &mut || Value::Str(b.channel.clone()));
                set(20, &mut || Value::Str(b.url.clone()));
            }
        }
        row
    }
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
