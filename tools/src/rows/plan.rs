//! Planning a typed app from its TOML: the source's schema and event-time field, each
//! operator's step with its checked expressions and its output schema, and the fields
//! each leaf writes to the sink. Every mistake comes back with the place of the value
//! it is in, and, for an expression, the byte inside the string.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use dirigo_operators::nexmark::queries::Query;
use dirigo_operators::typed::aggregate::AggregateSpec;
use dirigo_operators::typed::nexmark::{event_schema, EventFields};
use dirigo_operators::typed::{Expr, ExprError, JoinKeys, Schema, Type};
use dirigo_operators::window::WindowSpec;
use toml::Spanned;

use super::literal::file_offset;
use super::toml_types::SchemaConfig;
use crate::config::{
    AppSection, Config, Input, OperatorKind, OperatorSection, RowOrder, SinkKind, SourceKind,
    SourceSection,
};

/// A refusal: the span of the offending TOML value, and for a string the byte in its
/// value where the mistake is.
pub(crate) struct PlanError {
    span: Range<usize>,
    inner: Option<usize>,
    message: String,
}

impl PlanError {
    fn at<T>(span: Range<usize>, message: impl Into<String>) -> Result<T, Self> {
        Err(Self {
            span,
            inner: None,
            message: message.into(),
        })
    }

    fn in_string(value: &Spanned<String>, error: ExprError) -> Self {
        Self {
            span: value.span(),
            inner: Some(error.at),
            message: error.message,
        }
    }

    /// The message, for errors found once the file's text is gone.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

/// What one operator of a typed app does.
pub(crate) enum Step {
    Filter(Expr),
    Select(Vec<Expr>),
    /// Keys the following windows; passes rows on.
    Key,
    /// Passes on the rows of its inputs (merged before it).
    Union,
    Top {
        spec: WindowSpec,
        key: Vec<usize>,
        order: Expr,
        k: usize,
    },
    Window {
        spec: WindowSpec,
        key: Vec<usize>,
        aggregates: Vec<AggregateSpec>,
        having: Option<Expr>,
    },
    /// A running aggregate: per key over the whole stream.
    Aggregate {
        key: Vec<usize>,
        aggregates: Vec<AggregateSpec>,
        having: Option<Expr>,
    },
    /// Reads its two inputs: left, then right.
    Join {
        spec: WindowSpec,
        keys: JoinKeys,
        condition: Option<Expr>,
        fields: Option<Vec<Expr>>,
    },
}

/// One operator, planned: its step, its output schema, and the key fields (positions
/// in its output) the windows after it are keyed by.
type Planned = (Step, Arc<Schema>, Option<Vec<usize>>);

/// One source of a typed app, planned: the schema of its rows and the field that gives
/// their event time.
#[derive(Clone)]
pub(crate) struct PlannedSource {
    pub(crate) schema: Arc<Schema>,
    pub(crate) time_field: usize,
}

/// A typed app, planned.
pub(crate) struct Plan {
    /// Per source, in the file's order.
    pub(crate) sources: Vec<PlannedSource>,
    /// Per operator (in the file's order): its step and output schema.
    pub(crate) steps: Vec<(Step, Arc<Schema>)>,
    /// Operators in an order where inputs come first.
    pub(crate) order: Vec<usize>,
    /// Per leaf (an operator, or a source no operator reads), the positions of the
    /// fields the sink writes, and their names.
    pub(crate) leaves: Vec<(Input, Vec<usize>, Vec<String>)>,
    /// An app's one NEXMark source's rows: the events' fields the app reads (`None`:
    /// every one).
    pub(crate) event_fields: Option<EventFields>,
    /// Per operator, the fields it passes on as NULL: a `filter`'s that nothing after
    /// it reads (rows kept in state later then hold no copy of them).
    pub(crate) cleared: Vec<Vec<usize>>,
    /// An app's one NEXMark source's: when everything it feeds is a `filter` of one kind of event
    /// alone (`event = 'bid'`) and nothing after reads `event`, that kind and those
    /// filters. An unpaced source can then turn only events of that kind into rows,
    /// with `event` NULL as the filters would leave it, and the filters keep them all.
    pub(crate) event_kind: Option<(String, Vec<usize>)>,
}

/// Checks every typed app of `config`, whose text is `text`: `Err` with the span (one
/// byte, inside an expression string where the mistake is there) and the message.
pub fn check(config: &Config, text: &str) -> Result<(), (Range<usize>, String)> {
    for app in &config.apps {
        plan(app, &config.base_dir).map_err(|error| {
            let at = match error.inner {
                Some(inner) => file_offset(text, error.span.clone(), inner),
                None => error.span.start,
            };
            (at..at + 1, error.message)
        })?;
    }
    Ok(())
}

/// For `dirigo validate`: the schema each app with `schema = "infer"` gets, as a line
/// to pin in the file.
pub fn infer_note(config: &Config) -> Vec<String> {
    config
        .apps
        .iter()
        .filter_map(|app| {
            let notes: Vec<String> = (0..app.sources.len())
                .filter_map(|index| {
                    let source = &app.sources[index];
                    let schema = source.get_ref().schema.as_ref()?;
                    if !matches!(schema.get_ref(), SchemaConfig::Infer) {
                        return None;
                    }
                    let planned = source_schema(app, source, &config.base_dir).ok()?;
                    let fields: Vec<String> = planned
                        .schema
                        .fields()
                        .iter()
                        .map(|field| format!("{} = \"{}\"", toml_key(&field.name), field.ty))
                        .collect();
                    let which = if app.sources.len() > 1 {
                        format!(", source {}", app.source_name(index))
                    } else {
                        String::new()
                    };
                    Some(format!(
                        "app {}{which}: inferred schema = {{ {} }}",
                        app.name.get_ref(),
                        fields.join(", ")
                    ))
                })
                .collect();
            (!notes.is_empty()).then(|| notes.join("\n"))
        })
        .collect()
}

/// `name` as a TOML key: bare when it can be.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// Whether an operator uses a key only typed apps have.
fn typed_key(operator: &OperatorSection) -> Option<(Range<usize>, &'static str)> {
    if let Some(condition) = &operator.condition {
        return Some((condition.span(), "where"));
    }
    if let Some(fields) = &operator.fields {
        return Some((fields.span(), "fields"));
    }
    if let Some(by) = &operator.by {
        return Some((by.span(), "by"));
    }
    if let Some(aggregates) = &operator.aggregates {
        return Some((aggregates.span(), "aggregates"));
    }
    if let Some(having) = &operator.having {
        return Some((having.span(), "having"));
    }
    if let Some(order) = &operator.order {
        return Some((order.span(), "order"));
    }
    if let Some(k) = &operator.k {
        return Some((k.span(), "k"));
    }
    if let Some(on) = &operator.on {
        return Some((on.span(), "on"));
    }
    match operator.kind.get_ref() {
        OperatorKind::Top => Some((operator.kind.span(), "kind = \"top\"")),
        OperatorKind::Select => Some((operator.kind.span(), "kind = \"select\"")),
        OperatorKind::Key => Some((operator.kind.span(), "kind = \"key\"")),
        OperatorKind::Window => Some((operator.kind.span(), "kind = \"window\"")),
        OperatorKind::Aggregate => Some((operator.kind.span(), "kind = \"aggregate\"")),
        OperatorKind::Join => Some((operator.kind.span(), "kind = \"join\"")),
        _ => None,
    }
}

/// Plans `app` if it is typed (its source has a `schema`); `None` for the others, after
/// checking that they use no typed key.
pub(crate) fn plan(app: &AppSection, base_dir: &Path) -> Result<Option<Plan>, PlanError> {
    if let Some(query) = &app.query {
        if let Some(late) = app.source().and_then(|s| s.get_ref().late.as_ref()) {
            return PlanError::at(
                late.span(),
                "no `late` on a query's source: it is for `file`, `tcp` and `nats` sources of typed rows",
            );
        }
        // A query's sink writes the fields of its output type.
        if let (Some(fields), Some(schema)) = (&app.sink.fields, Query::row_schema(query.get_ref()))
        {
            for field in fields.get_ref() {
                if schema.index_of(field.get_ref()).is_none() {
                    return PlanError::at(
                        field.span(),
                        format!(
                            "a field of {}'s output, one of: {}; there is no `{}`",
                            query.get_ref(),
                            schema.names(),
                            field.get_ref()
                        ),
                    );
                }
            }
        }
        return Ok(None);
    }
    let schema_given = app
        .sources
        .iter()
        .any(|source| source.get_ref().schema.is_some());
    if !schema_given {
        for operator in &app.operators {
            if let Some((span, key)) = typed_key(operator) {
                return PlanError::at(
                    span,
                    format!(
                        "a `schema` on the app's source first: `{key}` works on typed rows \
                         (see configs/README.md, \"Pipelines over your own records\")"
                    ),
                );
            }
        }
        if let Some(fields) = &app.sink.fields {
            return PlanError::at(
                fields.span(),
                "a `schema` on the app's source first: `fields` names typed fields",
            );
        }
        if app.sink.kind == SinkKind::Csv {
            return PlanError::at(
                app.name.span(),
                "a `schema` on the app's source for a `csv` sink (it writes typed rows)",
            );
        }
        if let Some(source) = app.source() {
            if let Some(event_time) = &source.get_ref().event_time {
                return PlanError::at(
                    event_time.span(),
                    "a `schema` on the source first: `event_time` names one of its fields",
                );
            }
            if let Some(late) = &source.get_ref().late {
                return PlanError::at(
                    late.span(),
                    "a `schema` on the source first: `late` is for `file`, `tcp` and `nats` sources of typed rows",
                );
            }
        }
        return Ok(None);
    }
    let sources = app
        .sources
        .iter()
        .map(|source| source_schema(app, source, base_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let mut full = plan_steps(app, sources.clone())?;
    let (live, cleared) = live_fields(app, &full);
    full.cleared = cleared;
    // An app's one NEXMark source builds rows of the fields the app reads alone.
    let ([source], [live]) = (sources.as_slice(), live.as_slice()) else {
        return Ok(Some(full));
    };
    if app.sources[0].get_ref().kind_for(false) != SourceKind::Nexmark {
        return Ok(Some(full));
    }
    let (source_schema, time_field) = (&source.schema, source.time_field);
    if live.len() == source_schema.len() {
        full.event_kind = event_kind_filters(app, &full);
        return Ok(Some(full));
    }
    // The NEXMark source builds rows of the fields the app reads alone: plan again over
    // those (every name the first plan found is among them, so this plan checks too).
    let kept = EventFields::new(live);
    let Some(time_field) = live.iter().position(|&at| at == time_field) else {
        return Ok(Some(full));
    };
    let pruned = PlannedSource {
        schema: Arc::new(kept.schema()),
        time_field,
    };
    match plan_steps(app, vec![pruned]) {
        Ok(mut pruned) => {
            pruned.cleared = live_fields(app, &pruned).1;
            pruned.event_fields = Some(kept);
            pruned.event_kind = event_kind_filters(app, &pruned);
            Ok(Some(pruned))
        }
        Err(_) => Ok(Some(full)),
    }
}

/// See [`Plan::event_kind`]: the kind of event the filters that read the NEXMark
/// source of `plan` keep, and those filters, if they are all it feeds.
fn event_kind_filters(app: &AppSection, plan: &Plan) -> Option<(String, Vec<usize>)> {
    let event = plan.sources.first()?.schema.index_of("event")?;
    if plan
        .leaves
        .iter()
        .any(|(leaf, _, _)| matches!(leaf, Input::Source(_)))
    {
        return None;
    }
    let mut kind: Option<&str> = None;
    let mut filters = Vec::new();
    for (index, (step, _)) in plan.steps.iter().enumerate() {
        let inputs = app.inputs_of(index);
        if !inputs.contains(&Input::Source(0)) {
            continue;
        }
        let Step::Filter(condition) = step else {
            return None;
        };
        let (at, text) = condition.as_column_equals_text()?;
        let cleared = plan.cleared.get(index)?;
        if inputs.len() != 1 || at != event || !cleared.contains(&event) {
            return None;
        }
        if kind.is_some_and(|kind| kind != text) {
            return None;
        }
        kind = Some(text);
        filters.push(index);
    }
    Some((kind?.to_owned(), filters))
}

/// The steps of `app` over its `sources`, and its leaves.
fn plan_steps(app: &AppSection, sources: Vec<PlannedSource>) -> Result<Plan, PlanError> {
    let mut steps: Vec<Option<Planned>> = (0..app.operators.len()).map(|_| None).collect();
    let order = topological(app);
    for &index in &order {
        let operator = &app.operators[index];
        if *operator.kind.get_ref() == OperatorKind::Join {
            let parents = app.inputs_of(index);
            let sides: Vec<(&str, Arc<Schema>)> = parents
                .iter()
                .map(|parent| match *parent {
                    Input::Source(at) => (app.source_name(at), sources[at].schema.clone()),
                    Input::Operator(parent) => (
                        app.operators[parent].name.get_ref().as_str(),
                        steps[parent].as_ref().expect("inputs come first").1.clone(),
                    ),
                })
                .collect();
            let [left, right] = sides.as_slice() else {
                let span = operator
                    .input
                    .as_ref()
                    .map_or(operator.kind.span(), Spanned::span);
                return PlanError::at(
                    span,
                    format!(
                        "two inputs for a `join`, left and right, such as `input = [\"people\", \"auctions\"]`; it has {}",
                        sides.len()
                    ),
                );
            };
            steps[index] = Some(join_step(operator, left, right)?);
            continue;
        }
        // The input: the source or the operators it reads, which must agree.
        let mut input: Option<(Arc<Schema>, Option<Vec<usize>>)> = None;
        for parent in app.inputs_of(index) {
            let (schema, key) = match parent {
                Input::Source(at) => (sources[at].schema.clone(), None),
                Input::Operator(parent) => {
                    let (_, schema, key) = steps[parent].as_ref().expect("inputs come first");
                    (schema.clone(), key.clone())
                }
            };
            match &input {
                None => input = Some((schema, key)),
                Some((first, _)) if **first != *schema => {
                    let span = operator
                        .input
                        .as_ref()
                        .map_or(operator.name.span(), Spanned::span);
                    return PlanError::at(
                        span,
                        format!(
                            "inputs whose rows have the same fields; one has ({}), another ({})",
                            describe(first),
                            describe(&schema)
                        ),
                    );
                }
                Some(_) => input = Some((schema, None)),
            }
        }
        let (input, key) = input.unwrap_or((sources[0].schema.clone(), None));
        steps[index] = Some(step(operator, &input, key)?);
    }
    let steps: Vec<(Step, Arc<Schema>)> = steps
        .into_iter()
        .map(|step| {
            let (step, schema, _) = step.expect("every operator planned");
            (step, schema)
        })
        .collect();
    let read = |input: Input| (0..app.operators.len()).any(|o| app.inputs_of(o).contains(&input));
    // Sources no operator reads, then operators none reads, feed the sink.
    let leaf_ids: Vec<Input> = (0..sources.len())
        .map(Input::Source)
        .chain((0..app.operators.len()).map(Input::Operator))
        .filter(|&input| !read(input))
        .collect();
    let mut leaves = Vec::new();
    for leaf in leaf_ids {
        let schema = match leaf {
            Input::Source(at) => &sources[at].schema,
            Input::Operator(index) => &steps[index].1,
        };
        let (positions, names) = match &app.sink.fields {
            None => (
                (0..schema.len()).collect(),
                schema.fields().iter().map(|f| f.name.clone()).collect(),
            ),
            Some(fields) => {
                if fields.get_ref().is_empty() {
                    return PlanError::at(fields.span(), "at least one field to write");
                }
                let mut positions = Vec::new();
                let mut names = Vec::new();
                for field in fields.get_ref() {
                    let Some(at) = schema.index_of(field.get_ref()) else {
                        return PlanError::at(
                            field.span(),
                            format!(
                                "a field of the rows the sink gets, one of: {}; there is no `{}`",
                                schema.names(),
                                field.get_ref()
                            ),
                        );
                    };
                    positions.push(at);
                    names.push(field.get_ref().clone());
                }
                (positions, names)
            }
        };
        leaves.push((leaf, positions, names));
    }
    Ok(Plan {
        sources,
        steps,
        order,
        leaves,
        event_fields: None,
        cleared: Vec::new(),
        event_kind: None,
    })
}

/// Per source, the fields of its rows that `app` (planned as `plan`) reads anywhere,
/// and its event-time field: followed back from the fields each sink writes, through
/// each operator's expressions and keys. And per operator, the fields a `filter` reads
/// that nothing after it does (it passes them on as NULL).
fn live_fields(app: &AppSection, plan: &Plan) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let mut cleared = vec![Vec::new(); plan.steps.len()];
    let mut sources: Vec<Vec<bool>> = plan
        .sources
        .iter()
        .map(|source| {
            let mut marks = vec![false; source.schema.len()];
            marks[source.time_field] = true;
            marks
        })
        .collect();
    let mut needed: Vec<Vec<bool>> = plan
        .steps
        .iter()
        .map(|(_, schema)| vec![false; schema.len()])
        .collect();
    for (leaf, positions, _) in &plan.leaves {
        let marks = match *leaf {
            Input::Source(at) => &mut sources[at],
            Input::Operator(index) => &mut needed[index],
        };
        for &at in positions {
            marks[at] = true;
        }
    }
    for &index in plan.order.iter().rev() {
        let out = std::mem::take(&mut needed[index]);
        let parents = app.inputs_of(index);
        let parent_len = |parent: Input| match parent {
            Input::Source(at) => plan.sources[at].schema.len(),
            Input::Operator(at) => plan.steps[at].1.len(),
        };
        let mut inputs: Vec<Vec<bool>> = parents
            .iter()
            .map(|parent| vec![false; parent_len(*parent)])
            .collect();
        let mark = |marks: &mut Vec<bool>, columns: &[usize]| {
            for &at in columns {
                if let Some(mark) = marks.get_mut(at) {
                    *mark = true;
                }
            }
        };
        let passed: Vec<usize> = (0..out.len()).filter(|&at| out[at]).collect();
        match &plan.steps[index].0 {
            Step::Join {
                keys,
                condition,
                fields,
                ..
            } => {
                let left_len = inputs.first().map_or(0, Vec::len);
                let mut pair: Vec<usize> = match fields {
                    None => passed,
                    Some(fields) => fields.iter().flat_map(Expr::columns).collect(),
                };
                pair.extend(condition.iter().flat_map(Expr::columns));
                if let [left, right] = inputs.as_mut_slice() {
                    let (on_left, on_right): (Vec<usize>, Vec<usize>) =
                        pair.iter().partition(|&&at| at < left_len);
                    mark(left, &on_left);
                    let on_right: Vec<usize> = on_right.iter().map(|at| at - left_len).collect();
                    mark(right, &on_right);
                    mark(
                        left,
                        &keys.left.iter().flat_map(Expr::columns).collect::<Vec<_>>(),
                    );
                    mark(
                        right,
                        &keys
                            .right
                            .iter()
                            .flat_map(Expr::columns)
                            .collect::<Vec<_>>(),
                    );
                }
            }
            step => {
                let mut columns: Vec<usize> = match step {
                    Step::Filter(condition) => {
                        let read = condition.columns();
                        cleared[index] = read.iter().copied().filter(|&at| !out[at]).collect();
                        let mut columns = passed;
                        columns.extend(read);
                        columns
                    }
                    Step::Select(fields) => fields.iter().flat_map(Expr::columns).collect(),
                    Step::Key | Step::Union => passed,
                    Step::Top { key, order, .. } => {
                        let mut columns = passed;
                        columns.extend(key);
                        columns.extend(order.columns());
                        columns
                    }
                    Step::Window {
                        key, aggregates, ..
                    }
                    | Step::Aggregate {
                        key, aggregates, ..
                    } => {
                        let mut columns = key.clone();
                        columns.extend(aggregates.iter().flat_map(|aggregate| {
                            aggregate
                                .arg
                                .iter()
                                .flat_map(Expr::columns)
                                .collect::<Vec<_>>()
                        }));
                        columns
                    }
                    Step::Join { .. } => unreachable!("matched above"),
                };
                columns.sort_unstable();
                for input in &mut inputs {
                    mark(input, &columns);
                }
            }
        }
        for (parent, marks) in parents.into_iter().zip(inputs) {
            let target = match parent {
                Input::Source(at) => &mut sources[at],
                Input::Operator(at) => &mut needed[at],
            };
            for (target, mark) in target.iter_mut().zip(marks) {
                *target |= mark;
            }
        }
    }
    let live = sources
        .iter()
        .map(|marks| (0..marks.len()).filter(|&at| marks[at]).collect())
        .collect();
    (live, cleared)
}

/// `name type, …` for messages.
fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name, f.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Operators with their inputs first (the configuration checks refused cycles).
fn topological(app: &AppSection) -> Vec<usize> {
    let count = app.operators.len();
    let mut done = vec![false; count];
    let mut order = Vec::with_capacity(count);
    while order.len() < count {
        let before = order.len();
        for index in 0..count {
            if !done[index]
                && app
                    .inputs_of(index)
                    .iter()
                    .all(|input| input.operator().is_none_or(|parent| done[parent]))
            {
                done[index] = true;
                order.push(index);
            }
        }
        if order.len() == before {
            break;
        }
    }
    order
}

/// A source's schema and the position of its event-time field.
fn source_schema(
    app: &AppSection,
    source_spanned: &Spanned<SourceSection>,
    base_dir: &Path,
) -> Result<PlannedSource, PlanError> {
    let source = source_spanned.get_ref();
    let Some(schema_config) = source.schema.as_ref() else {
        return PlanError::at(
            source_spanned.span(),
            "a `schema` on this source: the app's other sources have one, so its rows are typed",
        );
    };
    let kind = source.kind_for(false);
    if !matches!(
        kind,
        SourceKind::File | SourceKind::Tcp | SourceKind::Nats | SourceKind::Nexmark
    ) {
        return PlanError::at(
            source_spanned.span(),
            "`kind = \"file\"`, `tcp`, `nats` or `nexmark` for a source with a `schema`",
        );
    }
    if let Some(event_time) = source
        .nats
        .as_ref()
        .and_then(|nats| nats.get_ref().event_time.as_ref())
    {
        return PlanError::at(
            event_time.span(),
            "no `event_time` in `[app.source.nats]` for typed rows: their event time is the \
             field the source's `event_time` names",
        );
    }
    if app.sink.kind == SinkKind::Nats {
        return PlanError::at(
            app.name.span(),
            "a `json-lines`, `csv` or `tcp` sink for typed rows (a `nats` sink publishes keyed records)",
        );
    }
    if let (Some(late), SourceKind::Nexmark) = (&source.late, kind) {
        return PlanError::at(
            late.span(),
            "no `late` on a `nexmark` source: it is for `file`, `tcp` and `nats` sources of typed rows \
             (the generator's events come in order)",
        );
    }
    let schema = match schema_config.get_ref() {
        SchemaConfig::Infer if kind == SourceKind::Nexmark => event_schema(),
        SchemaConfig::Fields(_) if kind == SourceKind::Nexmark => {
            return PlanError::at(
                schema_config.span(),
                "`schema = \"infer\"` for a `nexmark` source: its rows have the events' fields",
            )
        }
        SchemaConfig::Fields(fields) => {
            if fields.is_empty() {
                return PlanError::at(schema_config.span(), "at least one field in the schema");
            }
            let mut typed = Vec::with_capacity(fields.len());
            for (name, ty) in fields {
                if name.get_ref().is_empty() {
                    return PlanError::at(name.span(), "a field name that is not empty");
                }
                let Some(parsed) = Type::from_name(ty.get_ref()) else {
                    return PlanError::at(
                        ty.span(),
                        format!(
                            "a field type, one of {}; not {:?}",
                            Type::NAMES,
                            ty.get_ref()
                        ),
                    );
                };
                typed.push((name.get_ref().clone(), parsed));
            }
            Schema::new(typed)
        }
        SchemaConfig::Infer if matches!(kind, SourceKind::Tcp | SourceKind::Nats) => {
            return PlanError::at(
                schema_config.span(),
                format!(
                    "the fields and their types on a `{}` source, such as `schema = {{ card = \
                     \"string\", ts = \"timestamp_ms\" }}`: `\"infer\"` reads them from a file's \
                     first record, and a {} source has no file",
                    if kind == SourceKind::Tcp {
                        "tcp"
                    } else {
                        "nats"
                    },
                    if kind == SourceKind::Tcp {
                        "tcp"
                    } else {
                        "nats"
                    },
                ),
            )
        }
        SchemaConfig::Infer => {
            let path = source.path.as_ref().map(|p| base_dir.join(p.get_ref()));
            let format = source.format;
            let event_time = source.event_time.as_ref().map(|e| e.get_ref().as_str());
            match path.map(|path| super::build::infer_schema(&path, format, event_time)) {
                Some(Ok(schema)) => schema,
                Some(Err(message)) => return PlanError::at(schema_config.span(), message),
                None => {
                    return PlanError::at(schema_config.span(), "a `path` to infer the schema from")
                }
            }
        }
    };
    let Some(event_time) = &source.event_time else {
        return PlanError::at(
            source_spanned.span(),
            format!(
                "an `event_time`: the field that gives each row's time, one of: {}",
                schema.names()
            ),
        );
    };
    let Some(time_field) = schema.index_of(event_time.get_ref()) else {
        return PlanError::at(
            event_time.span(),
            format!(
                "a field of the schema, one of: {}; there is no `{}`",
                schema.names(),
                event_time.get_ref()
            ),
        );
    };
    let ty = schema.fields()[time_field].ty;
    if !matches!(ty, Type::Timestamp | Type::I64 | Type::U64) {
        return PlanError::at(
            event_time.span(),
            format!(
                "a timestamp_ms (or integer milliseconds) field for the event time; `{}` is {}",
                event_time.get_ref(),
                dirigo_operators::typed::article(ty)
            ),
        );
    }
    Ok(PlannedSource {
        schema: Arc::new(schema),
        time_field,
    })
}

fn only(
    present: bool,
    span: impl FnOnce() -> Range<usize>,
    message: &str,
) -> Result<(), PlanError> {
    if present {
        PlanError::at(span(), message.to_owned())
    } else {
        Ok(())
    }
}

/// One operator's step, its output schema and the key its output is partitioned by.
fn step(
    operator: &OperatorSection,
    input: &Arc<Schema>,
    key: Option<Vec<usize>>,
) -> Result<Planned, PlanError> {
    let kind = *operator.kind.get_ref();
    only(
        operator.condition.is_some() && kind != OperatorKind::Filter,
        || operator.condition.as_ref().expect("present").span(),
        "`where` only on a `filter` or a `join` (a window filters its output with `having`)",
    )?;
    only(
        operator.fields.is_some() && kind != OperatorKind::Select,
        || operator.fields.as_ref().expect("present").span(),
        "`fields` only on a `select` or a `join`",
    )?;
    only(
        operator.by.is_some()
            && !matches!(
                kind,
                OperatorKind::Key
                    | OperatorKind::Window
                    | OperatorKind::Aggregate
                    | OperatorKind::Top
            ),
        || operator.by.as_ref().expect("present").span(),
        "`by` only on a `key`, a `window`, an `aggregate` or a `top`",
    )?;
    only(
        (operator.order.is_some() || operator.k.is_some()) && kind != OperatorKind::Top,
        || {
            operator.order.as_ref().map_or_else(
                || operator.k.as_ref().expect("present").span(),
                Spanned::span,
            )
        },
        "`order` and `k` only on a `top`",
    )?;
    only(
        operator.aggregates.is_some()
            && !matches!(kind, OperatorKind::Window | OperatorKind::Aggregate),
        || operator.aggregates.as_ref().expect("present").span(),
        "`aggregates` only on a `window` or an `aggregate`",
    )?;
    only(
        operator.having.is_some()
            && !matches!(kind, OperatorKind::Window | OperatorKind::Aggregate),
        || operator.having.as_ref().expect("present").span(),
        "`having` only on a `window` or an `aggregate`",
    )?;
    only(
        operator.on.is_some(),
        || operator.on.as_ref().expect("present").span(),
        "`on` only on a `join`",
    )?;
    only(
        operator.keep_percent.is_some(),
        || operator.keep_percent.as_ref().expect("present").span(),
        "a `where` condition on typed rows instead of `keep_percent`",
    )?;
    only(
        operator.work_ns.is_some(),
        || operator.work_ns.as_ref().expect("present").span(),
        "no `work_ns` on typed rows (it stands for a costly function of key/value records)",
    )?;
    Ok(match kind {
        OperatorKind::Filter => {
            let Some(condition) = &operator.condition else {
                return PlanError::at(operator.kind.span(), "a `where` condition for a `filter` of typed rows, such as `where = \"amount > 1000\"`");
            };
            let expr = Expr::parse_condition(condition.get_ref(), input)
                .map_err(|error| PlanError::in_string(condition, error))?;
            (Step::Filter(expr), input.clone(), key)
        }
        OperatorKind::Select => {
            let Some(fields) = &operator.fields else {
                return PlanError::at(operator.kind.span(), "`fields` for a `select`, such as `fields = { eur = \"amount * 0.908\" }`");
            };
            let (exprs, output) = computed_fields(fields, input)?;
            (Step::Select(exprs), output, None)
        }
        OperatorKind::Key => {
            let Some(by) = &operator.by else {
                return PlanError::at(operator.kind.span(), "`by`, the key fields, such as `by = [\"card\"]`");
            };
            let key = key_fields(by, input)?;
            (Step::Key, input.clone(), Some(key))
        }
        OperatorKind::Window => {
            let key = match &operator.by {
                Some(by) => key_fields(by, input)?,
                None => key.unwrap_or_default(),
            };
            let (specs, output, having) = aggregate_output(operator, input, &key, true)?;
            let window = operator.window.as_ref().expect("checked: windows have one");
            let mut spec = window.get_ref().spec();
            spec.any_order = operator
                .row_order
                .as_ref()
                .is_some_and(|order| *order.get_ref() == RowOrder::Any);
            // The output is keyed by the key fields, now at the front.
            let out_key = (0..key.len()).collect();
            (
                Step::Window {
                    spec,
                    key,
                    aggregates: specs,
                    having,
                },
                output,
                Some(out_key),
            )
        }
        OperatorKind::Aggregate => {
            let key = match &operator.by {
                Some(by) => key_fields(by, input)?,
                None => key.unwrap_or_default(),
            };
            let (specs, output, having) = aggregate_output(operator, input, &key, false)?;
            // The output is keyed by the key fields, at the front.
            let out_key = (0..key.len()).collect();
            (
                Step::Aggregate {
                    key,
                    aggregates: specs,
                    having,
                },
                output,
                Some(out_key),
            )
        }
        OperatorKind::Top => {
            let key = match &operator.by {
                Some(by) => key_fields(by, input)?,
                None => key.clone().unwrap_or_default(),
            };
            let Some(order) = &operator.order else {
                return PlanError::at(operator.kind.span(), "an `order` for a `top`: what rows are ranked by, highest first, such as `order = \"n\"`");
            };
            let expr = Expr::parse(order.get_ref(), input)
                .map_err(|error| PlanError::in_string(order, error))?;
            let k = match &operator.k {
                None => 1,
                Some(k) if (1..=10_000).contains(k.get_ref()) => *k.get_ref() as usize,
                Some(k) => return PlanError::at(k.span(), format!("a `k` from 1 to 10000, not {}", k.get_ref())),
            };
            let window = operator.window.as_ref().expect("checked: windows have one");
            let mut spec = window.get_ref().spec();
            spec.any_order = operator
                .row_order
                .as_ref()
                .is_some_and(|order| *order.get_ref() == RowOrder::Any);
            let out_key = Some(key.clone());
            (Step::Top { spec, key, order: expr, k }, input.clone(), out_key)
        }
        OperatorKind::Union => (Step::Union, input.clone(), key),
        other => {
            return PlanError::at(
                operator.kind.span(),
                format!(
                    "an operator of typed rows: filter, select, key, window, aggregate, top, join or union; `{}` works on key/value records",
                    kind_name(other)
                ),
            )
        }
    })
}

fn kind_name(kind: OperatorKind) -> &'static str {
    match kind {
        OperatorKind::Map => "map",
        OperatorKind::Filter => "filter",
        OperatorKind::WindowCount => "window_count",
        OperatorKind::WindowSum => "window_sum",
        OperatorKind::WindowMax => "window_max",
        OperatorKind::RunningSum => "running_sum",
        OperatorKind::Select => "select",
        OperatorKind::Key => "key",
        OperatorKind::Window => "window",
        OperatorKind::Aggregate => "aggregate",
        OperatorKind::Top => "top",
        OperatorKind::Join => "join",
        OperatorKind::Union => "union",
    }
}

/// A `window`'s or an `aggregate`'s aggregates, output schema and `having`.
type AggregateOutput = (Vec<AggregateSpec>, Arc<Schema>, Option<Expr>);

/// The aggregates of a `window` (`windowed`) or an `aggregate` keyed by the fields at
/// `key` of `input`, the schema of its output rows — the key fields, the aggregates, and
/// a window's bounds — and its `having` checked over them.
fn aggregate_output(
    operator: &OperatorSection,
    input: &Schema,
    key: &[usize],
    windowed: bool,
) -> Result<AggregateOutput, PlanError> {
    let Some(aggregates) = &operator.aggregates else {
        let what = if windowed {
            "a `window`"
        } else {
            "an `aggregate`"
        };
        return PlanError::at(
            operator.kind.span(),
            format!("`aggregates` for {what}, such as `aggregates = {{ n = \"count()\" }}`"),
        );
    };
    if aggregates.get_ref().0.is_empty() {
        return PlanError::at(aggregates.span(), "at least one aggregate");
    }
    let mut out: Vec<(String, Type)> = key
        .iter()
        .map(|&at| (input.fields()[at].name.clone(), input.fields()[at].ty))
        .collect();
    let mut specs = Vec::new();
    for (name, text) in &aggregates.get_ref().0 {
        let bound = windowed && matches!(name.get_ref().as_str(), "window_start" | "window_end");
        if bound || out.iter().any(|(taken, _)| taken == name.get_ref()) {
            let others = if windowed {
                "no key field or other aggregate has (nor window_start, window_end)"
            } else {
                "no key field or other aggregate has"
            };
            return PlanError::at(
                name.span(),
                format!("an output name {others}; `{}` is taken", name.get_ref()),
            );
        }
        let spec = AggregateSpec::parse(text.get_ref(), input)
            .map_err(|error| PlanError::in_string(text, error))?;
        out.push((name.get_ref().clone(), spec.ty));
        specs.push(spec);
    }
    if windowed {
        out.push(("window_start".into(), Type::Timestamp));
        out.push(("window_end".into(), Type::Timestamp));
    }
    let output = Arc::new(Schema::new(out));
    let having = match &operator.having {
        None => None,
        Some(text) => Some(
            Expr::parse_condition(text.get_ref(), &output)
                .map_err(|error| PlanError::in_string(text, error))?,
        ),
    };
    Ok((specs, output, having))
}

fn key_fields(by: &Spanned<Vec<Spanned<String>>>, input: &Schema) -> Result<Vec<usize>, PlanError> {
    if by.get_ref().is_empty() {
        return PlanError::at(by.span(), "at least one key field");
    }
    let mut key = Vec::new();
    for name in by.get_ref() {
        let Some(at) = input.index_of(name.get_ref()) else {
            return PlanError::at(
                name.span(),
                format!(
                    "a key field of the input, one of: {}; there is no `{}`",
                    input.names(),
                    name.get_ref()
                ),
            );
        };
        if key.contains(&at) {
            return PlanError::at(
                name.span(),
                format!("each key field once; `{}` is listed twice", name.get_ref()),
            );
        }
        key.push(at);
    }
    Ok(key)
}

/// A `join` of `left` and `right` (each an input's name and schema): its keys from `on`,
/// and its output, the pair's fields named `INPUT.FIELD` with `window_start` and
/// `window_end`, or its `fields` computed over them, kept where `where` holds.
fn join_step(
    operator: &OperatorSection,
    left: &(&str, Arc<Schema>),
    right: &(&str, Arc<Schema>),
) -> Result<Planned, PlanError> {
    let refused = [
        (operator.by.as_ref().map(Spanned::span), "by", "`on`"),
        (
            operator.aggregates.as_ref().map(Spanned::span),
            "aggregates",
            "a `window` after the join",
        ),
        (
            operator.having.as_ref().map(Spanned::span),
            "having",
            "`where`",
        ),
        (
            operator.order.as_ref().map(Spanned::span),
            "order",
            "a `top` after the join",
        ),
        (
            operator.k.as_ref().map(Spanned::span),
            "k",
            "a `top` after the join",
        ),
        (
            operator.keep_percent.as_ref().map(Spanned::span),
            "keep_percent",
            "`where`",
        ),
        (
            operator.work_ns.as_ref().map(Spanned::span),
            "work_ns",
            "nothing: it stands for a costly function of key/value records",
        ),
    ];
    for (span, key, instead) in refused {
        if let Some(span) = span {
            return PlanError::at(span, format!("no `{key}` on a `join`: use {instead}"));
        }
    }
    let qualified = |(name, schema): &(&str, Arc<Schema>)| -> Vec<(String, Type)> {
        schema
            .fields()
            .iter()
            .map(|field| (format!("{name}.{}", field.name), field.ty))
            .collect()
    };
    let mut pair = qualified(left);
    pair.extend(qualified(right));
    let Some(on) = &operator.on else {
        return PlanError::at(
            operator.kind.span(),
            format!(
                "an `on` condition for a `join`: equal keys of both inputs, such as `on = \"{}.id = {}.id\"`",
                left.0, right.0
            ),
        );
    };
    let keys = Expr::parse_join_on(on.get_ref(), &Schema::new(pair.clone()), left.1.len())
        .map_err(|error| PlanError::in_string(on, error))?;
    pair.push(("window_start".into(), Type::Timestamp));
    pair.push(("window_end".into(), Type::Timestamp));
    let joined = Arc::new(Schema::new(pair));
    let condition = match &operator.condition {
        None => None,
        Some(text) => Some(
            Expr::parse_condition(text.get_ref(), &joined)
                .map_err(|error| PlanError::in_string(text, error))?,
        ),
    };
    let (fields, output) = match &operator.fields {
        None => (None, joined),
        Some(fields) => {
            let (exprs, schema) = computed_fields(fields, &joined)?;
            (Some(exprs), schema)
        }
    };
    let window = operator.window.as_ref().expect("checked: windows have one");
    let mut spec = window.get_ref().spec();
    spec.any_order = operator
        .row_order
        .as_ref()
        .is_some_and(|order| *order.get_ref() == RowOrder::Any);
    Ok((
        Step::Join {
            spec,
            keys,
            condition,
            fields,
        },
        output,
        None,
    ))
}

/// The expressions of `fields = { name = "expression", … }` over `input`, and the
/// schema of the rows they make.
fn computed_fields(
    fields: &Spanned<crate::rows::NamedExprs>,
    input: &Schema,
) -> Result<(Vec<Expr>, Arc<Schema>), PlanError> {
    if fields.get_ref().0.is_empty() {
        return PlanError::at(fields.span(), "at least one field");
    }
    let mut exprs = Vec::new();
    let mut out: Vec<(String, Type)> = Vec::new();
    for (name, text) in &fields.get_ref().0 {
        if out.iter().any(|(taken, _)| taken == name.get_ref()) {
            return PlanError::at(
                name.span(),
                format!("each output name once; `{}` is taken", name.get_ref()),
            );
        }
        let expr = Expr::parse(text.get_ref(), input)
            .map_err(|error| PlanError::in_string(text, error))?;
        if expr.ty() == Type::Null {
            return PlanError::at(
                text.span(),
                "a value with a type: write CAST(NULL AS string) and the like",
            );
        }
        out.push((name.get_ref().clone(), expr.ty()));
        exprs.push(expr);
    }
    Ok((exprs, Arc::new(Schema::new(out))))
}
