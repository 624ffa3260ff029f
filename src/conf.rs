//! Configuration: the directive table, the configuration structures, merging and the checks
//! that make `nginx -t` catch every mistake.

use core::ffi::{c_char, c_void};
use core::mem::offset_of;
use core::ptr::{self, addr_of_mut};

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_enum_t, ngx_conf_set_enum_slot, ngx_conf_set_msec_slot,
    ngx_conf_set_num_slot, ngx_conf_set_sec_slot, ngx_conf_set_size_slot, ngx_conf_t,
    ngx_http_complex_value_t, ngx_http_request_t, ngx_http_set_complex_value_slot, ngx_int_t,
    ngx_msec_t, ngx_shm_zone_t, ngx_str_t, ngx_uint_t, time_t, NGX_CONF_1MORE, NGX_CONF_NOARGS,
    NGX_CONF_TAKE1, NGX_CONF_TAKE2, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use crate::metrics::zone;
use crate::properties;
use crate::record::{is_legal_topic, TopicPattern, ValueFormat};
use crate::sites::privacy::ClientIp;
use crate::sites::registry::Registry;
use crate::Module;

const UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
const NGX_CONF_UNSET: ngx_int_t = -1;
/// Topics one worker produces to, unless `kafka_max_topics` says otherwise.
pub const DEFAULT_MAX_TOPICS: usize = 256;
const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
const UNSET_SEC: time_t = -1;
const UNSET_SIZE: usize = usize::MAX;
/// `kafka_metrics_zone`'s default: about 1,900 counter sets (locations x topics).
const DEFAULT_METRICS_SIZE: usize = 1 << 20;

/// `http`-level settings: one producer per worker is built from these.
pub struct MainConf {
    /// `kafka_brokers`, joined as librdkafka's `bootstrap.servers`.
    pub brokers: Option<String>,
    /// `kafka_option` pairs, in configuration order, each validated by librdkafka.
    pub options: Vec<(String, String)>,
    /// `kafka_flush_timeout`: how long a worker that exits waits for deliveries.
    pub flush_timeout: ngx_msec_t,
    /// Whether any location has `kafka_ingest`; without one, workers start no producer.
    pub ingest: bool,
    /// `kafka_max_topics`: how many topics one worker produces to.
    pub max_topics: usize,
    max_topics_conf: ngx_int_t,
    /// Whether a location has `kafka_metrics` or `kafka_ready`.
    pub metrics: bool,
    pub ready: bool,
    /// `kafka_metrics_zone`: the shared memory zone the counters live in, and its size.
    pub metrics_zone: *mut ngx_shm_zone_t,
    metrics_size: usize,
    /// Topics that ingest locations name without variables: readiness needs them to exist.
    pub fixed_topics: Vec<String>,
    /// `kafka_spool`.
    pub spool: Option<SpoolConf>,
    /// Whether a location uses `kafka_delivery durable` or `acked`.
    pub durable: bool,
    pub acked: bool,
    /// `kafka_sites`: the site registry, read at configuration time.
    pub sites: Option<Box<Registry>>,
    /// Whether a location has `kafka_site_stats`.
    pub site_stats: bool,
    /// The secret of `kafka_collect_client_ip hash`: random for each configuration.
    pub ip_secret: [u8; 32],
    /// `kafka_msk_iam`: the cluster's region and the credential chain's environment.
    pub msk_iam: Option<MskIamConf>,
}

/// `kafka_msk_iam region`: SASL/OAUTHBEARER with tokens signed for Amazon MSK's IAM access
/// control. The `AWS_*` variables are read when the configuration is, from nginx's own
/// environment (workers see only what `env` lets through; this needs no `env` directive).
#[derive(Clone)]
pub struct MskIamConf {
    pub region: String,
    pub env: crate::aws::credentials::Env,
}

/// `kafka_spool path [max_size=size] [fsync=time|batch|off] [replay_rate=number]
/// [dead_letter_after=time]`.
#[derive(Clone, Debug)]
pub struct SpoolConf {
    pub path: std::path::PathBuf,
    /// The directory's size cap, in bytes, shared by every worker that writes to it.
    pub max_size: u64,
    /// How often written files are synced to storage; `None`: never (the page cache only).
    pub fsync: Option<ngx_msec_t>,
    /// `fsync=batch`: a `durable` answer waits until its record is synced (group commit).
    pub fsync_batch: bool,
    /// Events per second one worker replays.
    pub replay_rate: u32,
    /// How long a record may wait for its topic to exist before it is dead-lettered.
    pub dead_letter_after: ngx_msec_t,
}

impl MainConf {
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        properties::producer_config(
            self.brokers.as_deref().unwrap_or_default(),
            &self.options,
            self.success_reports(),
            self.statistics(),
        )
    }

    /// Whether the producer reports deliveries, not only failures: for the counters, the
    /// journal and replay (which must know what was acknowledged), and `acked` locations.
    pub fn success_reports(&self) -> bool {
        !self.metrics_zone.is_null() || self.spool.is_some() || self.acked
    }

    /// Whether the producer reports statistics: for the metrics' gauges, readiness, and
    /// replay (which waits for a broker to be up).
    pub fn statistics(&self) -> bool {
        (self.metrics || self.ready || self.spool.is_some())
            && self.option("statistics.interval.ms") != Some("0")
    }

    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            brokers: None,
            options: Vec::new(),
            flush_timeout: UNSET_MSEC,
            ingest: false,
            max_topics: 0,
            max_topics_conf: NGX_CONF_UNSET,
            metrics: false,
            ready: false,
            metrics_zone: ptr::null_mut(),
            metrics_size: UNSET_SIZE,
            fixed_topics: Vec::new(),
            spool: None,
            durable: false,
            acked: false,
            sites: None,
            site_stats: false,
            ip_secret: [0; 32],
            msk_iam: None,
        }
    }
}

/// Per-location settings; all but `kafka_ingest` are inherited.
pub struct LocationConf {
    /// Where `kafka_ingest` appears (file and line), for error messages at merge time.
    pub ingest_at: Option<(String, usize)>,
    pub topic: *mut ngx_http_complex_value_t,
    pub key: *mut ngx_http_complex_value_t,
    /// The variable `topic` and `key` consist of, if each is one variable and nothing else
    /// (see `crate::http::value`); set at merge time.
    pub topic_var: Option<ngx_uint_t>,
    pub key_var: Option<ngx_uint_t>,
    pub allowed_topics: Option<Vec<TopicPattern>>,
    pub value_format: ngx_uint_t,
    pub retry_after: time_t,
    /// The location's name as written, recorded by `kafka_ingest`.
    location_name: Option<Vec<u8>>,
    /// `kafka_status_zone`: the `location` label of the counters (inherited).
    status_zone: Option<Vec<u8>>,
    /// The label an ingest location counts under: `kafka_status_zone`, or its name.
    pub scope: Vec<u8>,
    /// `kafka_metrics`'s format.
    pub metrics_format: ngx_uint_t,
    /// `kafka_delivery`: when the client is answered.
    pub delivery: ngx_uint_t,
    /// `kafka_ack_timeout`: how long an `acked` request waits for the broker.
    pub ack_timeout: ngx_msec_t,
    /// `kafka_header` pairs: a level that has any does not inherit the enclosing level's.
    pub headers: Option<Vec<Header>>,
    /// Where `kafka_collect` appears, and `$request_id` compiled for its events' header.
    pub collect_at: Option<(String, usize)>,
    pub request_id: *mut ngx_http_complex_value_t,
    /// `kafka_collect_client_ip`, `kafka_collect_dnt`, `kafka_collect_max_event_size`,
    /// `kafka_collect_max_events`.
    pub client_ip: ngx_uint_t,
    pub dnt: ngx_uint_t,
    pub max_event_size: usize,
    pub max_events: ngx_uint_t,
}

/// One `kafka_header`: a record header's name and its value, evaluated per request.
#[derive(Clone)]
pub struct Header {
    pub name: Vec<u8>,
    pub value: *mut ngx_http_complex_value_t,
}

impl Header {
    pub fn value(&self) -> &ngx_http_complex_value_t {
        // SAFETY: compiled by `set_header` for the configuration's lifetime, never null.
        unsafe { &*self.value }
    }
}

/// `kafka_delivery`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Answered once the producer took the event.
    Queued,
    /// Answered once the event is in this worker's journal file.
    Durable,
    /// Answered once the broker acknowledged the event.
    Acked,
}

impl Default for LocationConf {
    fn default() -> Self {
        LocationConf {
            ingest_at: None,
            topic: ptr::null_mut(),
            key: ptr::null_mut(),
            topic_var: None,
            key_var: None,
            allowed_topics: None,
            value_format: UNSET_UINT,
            retry_after: UNSET_SEC,
            location_name: None,
            status_zone: None,
            scope: Vec::new(),
            metrics_format: METRICS_PROMETHEUS,
            delivery: UNSET_UINT,
            ack_timeout: UNSET_MSEC,
            headers: None,
            collect_at: None,
            request_id: ptr::null_mut(),
            client_ip: UNSET_UINT,
            dnt: UNSET_UINT,
            max_event_size: UNSET_SIZE,
            max_events: UNSET_UINT,
        }
    }
}

impl LocationConf {
    pub fn topic(&self) -> Option<&ngx_http_complex_value_t> {
        // SAFETY: null, or compiled by `ngx_http_set_complex_value_slot` for the cycle.
        unsafe { self.topic.as_ref() }
    }

    pub fn key(&self) -> Option<&ngx_http_complex_value_t> {
        // SAFETY: as for `topic`.
        unsafe { self.key.as_ref() }
    }

    pub fn delivery(&self) -> Delivery {
        match self.delivery {
            DELIVERY_DURABLE => Delivery::Durable,
            DELIVERY_ACKED => Delivery::Acked,
            _ => Delivery::Queued,
        }
    }

    pub fn client_ip(&self) -> ClientIp {
        match self.client_ip {
            CLIENT_IP_TRUNCATE => ClientIp::Truncate,
            CLIENT_IP_HASH => ClientIp::Hash,
            CLIENT_IP_OFF => ClientIp::Off,
            _ => ClientIp::Full,
        }
    }

    pub fn dnt(&self) -> Dnt {
        match self.dnt {
            DNT_ANONYMIZE => Dnt::Anonymize,
            DNT_DROP => Dnt::Drop,
            _ => Dnt::Off,
        }
    }

    pub fn request_id(&self) -> Option<&ngx_http_complex_value_t> {
        // SAFETY: null, or compiled by `set_collect` for the configuration's lifetime.
        unsafe { self.request_id.as_ref() }
    }

    pub fn value_format(&self) -> ValueFormat {
        if self.value_format == VALUE_FORMAT_BODY_DATA {
            ValueFormat::BodyData
        } else {
            ValueFormat::Raw
        }
    }
}

/// A table for `ngx_conf_set_enum_slot`: the (name, value) pairs, then nginx's terminator.
macro_rules! conf_enum {
    ($($name:literal => $value:expr),+ $(,)?) => {
        [
            $(ngx_conf_enum_t { name: ngx_string!($name), value: $value },)+
            ngx_conf_enum_t { name: ngx_str_t { len: 0, data: ptr::null_mut() }, value: 0 },
        ]
    };
}

const VALUE_FORMAT_RAW: ngx_uint_t = 0;
const VALUE_FORMAT_BODY_DATA: ngx_uint_t = 1;

static mut VALUE_FORMATS: [ngx_conf_enum_t; 3] = conf_enum![
    "raw" => VALUE_FORMAT_RAW,
    "body_data" => VALUE_FORMAT_BODY_DATA,
];

const DELIVERY_QUEUED: ngx_uint_t = 0;
const DELIVERY_DURABLE: ngx_uint_t = 1;
const DELIVERY_ACKED: ngx_uint_t = 2;

static mut DELIVERIES: [ngx_conf_enum_t; 4] = conf_enum![
    "queued" => DELIVERY_QUEUED,
    "durable" => DELIVERY_DURABLE,
    "acked" => DELIVERY_ACKED,
];

/// `kafka_collect_dnt`: what a request with `DNT: 1` or `Sec-GPC: 1` gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dnt {
    /// Collected like any other.
    Off,
    /// Collected without the client's address and user agent.
    Anonymize,
    /// Not collected (answered as if it were, and counted as `dnt`).
    Drop,
}

const CLIENT_IP_FULL: ngx_uint_t = 0;
const CLIENT_IP_TRUNCATE: ngx_uint_t = 1;
const CLIENT_IP_HASH: ngx_uint_t = 2;
const CLIENT_IP_OFF: ngx_uint_t = 3;

static mut CLIENT_IPS: [ngx_conf_enum_t; 5] = conf_enum![
    "full" => CLIENT_IP_FULL,
    "truncate" => CLIENT_IP_TRUNCATE,
    "hash" => CLIENT_IP_HASH,
    "off" => CLIENT_IP_OFF,
];

const DNT_OFF: ngx_uint_t = 0;
const DNT_ANONYMIZE: ngx_uint_t = 1;
const DNT_DROP: ngx_uint_t = 2;

static mut DNTS: [ngx_conf_enum_t; 4] = conf_enum![
    "off" => DNT_OFF,
    "anonymize" => DNT_ANONYMIZE,
    "drop" => DNT_DROP,
];

pub const METRICS_PROMETHEUS: ngx_uint_t = 0;
pub const METRICS_JSON: ngx_uint_t = 1;

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

/// The directive table.
pub static mut COMMANDS: [ngx_command_t; 27] = [
    ngx_command_t {
        name: ngx_string!("kafka_brokers"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(set_brokers),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_option"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE2) as ngx_uint_t,
        set: Some(set_option),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_msk_iam"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_msk_iam),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_flush_timeout"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_msec_slot),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: offset_of!(MainConf, flush_timeout),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_max_topics"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_num_slot),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: offset_of!(MainConf, max_topics_conf),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_ingest"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_ingest),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_topic"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_http_set_complex_value_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, topic),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_allowed_topics"),
        type_: (ANY_LEVEL | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(set_allowed_topics),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_key"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_http_set_complex_value_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, key),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_value_format"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_enum_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, value_format),
        post: addr_of_mut!(VALUE_FORMATS) as *mut c_void,
    },
    ngx_command_t {
        name: ngx_string!("kafka_retry_after"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_sec_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, retry_after),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_metrics"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_metrics),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_metrics_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_size_slot),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: offset_of!(MainConf, metrics_size),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_status_zone"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_status_zone),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_ready"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_ready),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_delivery"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_delivery),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, delivery),
        post: addr_of_mut!(DELIVERIES) as *mut c_void,
    },
    ngx_command_t {
        name: ngx_string!("kafka_ack_timeout"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_msec_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, ack_timeout),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_header"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE2) as ngx_uint_t,
        set: Some(set_header),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_spool"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(set_spool),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_sites"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_sites),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_collect"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_collect),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_collect_client_ip"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_enum_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, client_ip),
        post: addr_of_mut!(CLIENT_IPS) as *mut c_void,
    },
    ngx_command_t {
        name: ngx_string!("kafka_collect_dnt"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_enum_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, dnt),
        post: addr_of_mut!(DNTS) as *mut c_void,
    },
    ngx_command_t {
        name: ngx_string!("kafka_collect_max_event_size"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_size_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, max_event_size),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_collect_max_events"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_num_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: offset_of!(LocationConf, max_events),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("kafka_site_stats"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_site_stats),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

/// The directive's arguments, name first.
fn args(cf: &ngx_conf_t) -> &[ngx_str_t] {
    // SAFETY: while a directive is being handled, `cf.args` holds its arguments as `ngx_str_t`.
    unsafe { (*cf.args).as_slice() }
}

fn text(s: &ngx_str_t) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(s.as_bytes())
}

/// Logs an `[emerg]` line with the current file and line, and fails the directive.
fn emerg(cf: &mut ngx_conf_t, message: std::fmt::Arguments) -> *mut c_char {
    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
    NGX_CONF_ERROR
}

fn invalid_value(cf: &mut ngx_conf_t, value: &ngx_str_t) -> *mut c_char {
    let directive = text(&args(cf)[0]).into_owned();
    let value = text(value).into_owned();
    emerg(
        cf,
        format_args!("invalid value \"{value}\" in \"{directive}\" directive"),
    )
}

extern "C" fn set_brokers(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's main configuration.
    let (cf, mcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
    if mcf.brokers.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let mut list = Vec::new();
    for i in 1..args(cf).len() {
        let arg = args(cf)[i];
        let broker = text(&arg);
        if !properties::is_broker_address(&broker) {
            return invalid_value(cf, &arg);
        }
        list.push(broker.into_owned());
    }
    mcf.brokers = Some(list.join(","));
    NGX_CONF_OK
}

extern "C" fn set_msk_iam(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's main configuration.
    let (cf, mcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
    if mcf.msk_iam.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let arg = args(cf)[1];
    let region = text(&arg).into_owned();
    // us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-7 ...
    let parts: Vec<&str> = region.split('-').collect();
    let valid = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if !valid {
        return emerg(
            cf,
            format_args!("invalid AWS region \"{region}\" in \"kafka_msk_iam\" directive"),
        );
    }
    mcf.msk_iam = Some(MskIamConf {
        region,
        env: crate::aws::credentials::env_from_process(),
    });
    NGX_CONF_OK
}

/// `kafka_msk_iam` sets the mechanism (and TLS, unless told otherwise); what contradicts it
/// is a configuration error.
fn msk_iam_options(cf: &mut ngx_conf_t, mcf: &mut MainConf) -> Result<(), *mut c_char> {
    if mcf.msk_iam.is_none() {
        return Ok(());
    }
    for name in ["sasl.mechanism", "sasl.mechanisms"] {
        if let Some(v) = mcf
            .option(name)
            .filter(|v| !v.eq_ignore_ascii_case("OAUTHBEARER"))
        {
            return Err(emerg(
                cf,
                format_args!(
                    "\"kafka_msk_iam\" signs OAUTHBEARER tokens: \"{name}\" cannot be \"{v}\""
                ),
            ));
        }
    }
    for name in [
        "sasl.oauthbearer.method",
        "enable.sasl.oauthbearer.unsecure.jwt",
    ] {
        if mcf.option(name).is_some() {
            return Err(emerg(
                cf,
                format_args!("\"kafka_msk_iam\" makes the tokens: \"{name}\" cannot be set"),
            ));
        }
    }
    match mcf.option("security.protocol").map(str::to_ascii_lowercase) {
        None => mcf
            .options
            .push(("security.protocol".into(), "sasl_ssl".into())),
        Some(p) if p.starts_with("sasl_") => {}
        Some(p) => {
            return Err(emerg(
                cf,
                format_args!(
                    "\"kafka_msk_iam\" authenticates with SASL: \"security.protocol\" cannot \
                     be \"{p}\""
                ),
            ))
        }
    }
    if mcf.option("sasl.mechanism").is_none() && mcf.option("sasl.mechanisms").is_none() {
        mcf.options
            .push(("sasl.mechanism".into(), "OAUTHBEARER".into()));
    }
    Ok(())
}

extern "C" fn set_option(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's main configuration.
    let (cf, mcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
    let (name, value) = {
        let a = args(cf);
        (text(&a[1]).into_owned(), text(&a[2]).into_owned())
    };
    if mcf.options.iter().any(|(n, _)| *n == name) {
        return emerg(
            cf,
            format_args!("duplicate librdkafka property \"{name}\" in \"kafka_option\" directive"),
        );
    }
    if let Err(reason) = properties::check(&name, &value) {
        // The value is not repeated: it may be a password.
        return emerg(
            cf,
            format_args!("invalid value for \"{name}\" in \"kafka_option\" directive: {reason}"),
        );
    }
    mcf.options.push((name, value));
    NGX_CONF_OK
}

extern "C" fn set_ingest(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's location configuration.
    let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocationConf>()) };
    if lcf.ingest_at.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    // SAFETY: a directive is always parsed from a file; `conf_file` is valid while parsing.
    let (file, line) = unsafe {
        let f = &*cf.conf_file;
        (text(&f.file.name).into_owned(), f.line)
    };
    lcf.ingest_at = Some((file, line));

    let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cf) else {
        return NGX_CONF_ERROR;
    };
    clcf.handler = Some(crate::http::ingest_handler);
    lcf.location_name = Some(clcf.name.as_bytes().to_vec());

    if let Some(mcf) = Module::main_conf_mut(cf) {
        mcf.ingest = true;
    }
    NGX_CONF_OK
}

extern "C" fn set_metrics(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's location configuration.
    let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocationConf>()) };
    if let Some(format) = args(cf).get(1).copied() {
        lcf.metrics_format = match format.as_bytes() {
            b"prometheus" => METRICS_PROMETHEUS,
            b"json" => METRICS_JSON,
            _ => return invalid_value(cf, &format),
        };
    }
    install(cf, crate::http::metrics_handler, |mcf| mcf.metrics = true)
}

/// Makes `handler` the location's content handler (once), and notes it in the main
/// configuration with `note`.
fn install(
    cf: &mut ngx_conf_t,
    handler: unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t,
    note: impl FnOnce(&mut MainConf),
) -> *mut c_char {
    let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cf) else {
        return NGX_CONF_ERROR;
    };
    if clcf.handler.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    clcf.handler = Some(handler);
    if let Some(mcf) = Module::main_conf_mut(cf) {
        note(mcf);
    }
    NGX_CONF_OK
}

extern "C" fn set_ready(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state.
    install(unsafe { &mut *cf }, crate::http::ready_handler, |mcf| {
        mcf.ready = true
    })
}

extern "C" fn set_status_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's location configuration.
    let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocationConf>()) };
    if lcf.status_zone.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let name = args(cf)[1];
    if name.is_empty() || name.len > zone::LOCATION_MAX || name.as_bytes().contains(&b'\0') {
        return invalid_value(cf, &name);
    }
    lcf.status_zone = Some(name.as_bytes().to_vec());
    NGX_CONF_OK
}

extern "C" fn set_allowed_topics(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's location configuration.
    let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocationConf>()) };
    if lcf.allowed_topics.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let mut patterns = Vec::new();
    for i in 1..args(cf).len() {
        let arg = args(cf)[i];
        match TopicPattern::parse(arg.as_bytes()) {
            Some(p) => patterns.push(p),
            None => return invalid_value(cf, &arg),
        }
    }
    lcf.allowed_topics = Some(patterns);
    NGX_CONF_OK
}

/// `kafka_delivery`: nginx's enum slot, and a note in the main configuration, read before
/// locations are merged (the producer's properties depend on it).
extern "C" fn set_delivery(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx's own slot, with the arguments nginx passed.
    let rc = unsafe { ngx_conf_set_enum_slot(cf, cmd, conf) };
    if rc != NGX_CONF_OK {
        return rc;
    }
    // SAFETY: nginx passes the parser state and this module's location configuration.
    let (cf, lcf) = unsafe { (&mut *cf, &*conf.cast::<LocationConf>()) };
    let delivery = lcf.delivery();
    if let Some(mcf) = Module::main_conf_mut(cf) {
        match delivery {
            Delivery::Durable => mcf.durable = true,
            Delivery::Acked => mcf.acked = true,
            Delivery::Queued => {}
        }
    }
    NGX_CONF_OK
}

extern "C" fn set_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's location configuration.
    let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocationConf>()) };
    let (name, mut value) = (args(cf)[1], args(cf)[2]);
    // A token, as HTTP header names are: the failure line and the tools split at `=`.
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || name.len > 255 || !name.as_bytes().iter().all(token) {
        return invalid_value(cf, &name);
    }
    let headers = lcf.headers.get_or_insert_with(Vec::new);
    if headers.iter().any(|h| h.name == name.as_bytes()) {
        let name = text(&name).into_owned();
        return emerg(
            cf,
            format_args!("duplicate header \"{name}\" in \"kafka_header\" directive"),
        );
    }
    let Some(cv) = compile(cf, &mut value) else {
        return NGX_CONF_ERROR;
    };
    headers.push(Header {
        name: name.as_bytes().to_vec(),
        value: cv,
    });
    NGX_CONF_OK
}

extern "C" fn set_spool(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's main configuration.
    let (cf, mcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
    if mcf.spool.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let mut path = args(cf)[1];
    // Relative to nginx's prefix, as nginx's own paths are.
    // SAFETY: the cycle being configured; the full name is allocated from its pool.
    if unsafe { ngx::ffi::ngx_conf_full_name(cf.cycle, &mut path, 0) }
        != ngx::ffi::NGX_OK as ngx_int_t
    {
        return NGX_CONF_ERROR;
    }
    let path = std::path::PathBuf::from(text(&path).into_owned());
    let mut spool = SpoolConf {
        path,
        max_size: 1 << 30,
        fsync: Some(1000),
        fsync_batch: false,
        replay_rate: 10_000,
        dead_letter_after: 3_600_000,
    };
    for i in 2..args(cf).len() {
        let arg = args(cf)[i];
        let a = arg.as_bytes();
        let Some(eq) = a.iter().position(|&b| b == b'=') else {
            return invalid_value(cf, &arg);
        };
        let (name, value) = (&a[..eq], &a[eq + 1..]);
        let mut v = ngx_str_t {
            len: value.len(),
            data: value.as_ptr().cast_mut(),
        };
        // SAFETY: nginx's parsers read `v`, a slice of the directive's argument.
        let ok = match name {
            b"max_size" => match unsafe { ngx::ffi::ngx_parse_offset(&mut v) } {
                n if n > 0 => {
                    spool.max_size = n as u64;
                    true
                }
                _ => false,
            },
            b"fsync" if value == b"off" => {
                spool.fsync = None;
                true
            }
            // Group commit: durable answers wait for the sync of their batch; other files
            // are synced every second.
            b"fsync" if value == b"batch" => {
                spool.fsync = Some(1000);
                spool.fsync_batch = true;
                true
            }
            b"fsync" | b"dead_letter_after" => {
                match unsafe { ngx::ffi::ngx_parse_time(&mut v, 0) } {
                    n if n > 0 && name == b"fsync" => {
                        spool.fsync = Some(n as ngx_msec_t);
                        true
                    }
                    n if n > 0 => {
                        spool.dead_letter_after = n as ngx_msec_t;
                        true
                    }
                    _ => false,
                }
            }
            b"replay_rate" => match std::str::from_utf8(value).ok().and_then(|t| t.parse().ok()) {
                Some(n) if n > 0 => {
                    spool.replay_rate = n;
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return invalid_value(cf, &arg);
        }
    }
    match std::fs::metadata(&spool.path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            let p = spool.path.display().to_string();
            return emerg(
                cf,
                format_args!("\"kafka_spool\" path \"{p}\" is not a directory"),
            );
        }
        Err(e) => {
            let p = spool.path.display().to_string();
            return emerg(cf, format_args!("\"kafka_spool\" path \"{p}\": {e}"));
        }
    }
    mcf.spool = Some(spool);
    NGX_CONF_OK
}

extern "C" fn set_sites(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's main configuration.
    let (cf, mcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
    if mcf.sites.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let mut path = args(cf)[1];
    // SAFETY: the cycle being configured; the full name is allocated from its pool.
    if unsafe { ngx::ffi::ngx_conf_full_name(cf.cycle, &mut path, 1) }
        != ngx::ffi::NGX_OK as ngx_int_t
    {
        return NGX_CONF_ERROR;
    }
    let path = text(&path).into_owned();
    match Registry::load(std::path::Path::new(&path)) {
        Ok(registry) => {
            mcf.sites = Some(Box::new(registry));
            NGX_CONF_OK
        }
        Err(e) => emerg(cf, format_args!("\"kafka_sites\" \"{path}\": {e}")),
    }
}

extern "C" fn set_collect(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state and this module's location configuration.
    let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocationConf>()) };
    if lcf.collect_at.is_some() || lcf.ingest_at.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    // SAFETY: a directive is always parsed from a file; `conf_file` is valid while parsing.
    let (file, line) = unsafe {
        let f = &*cf.conf_file;
        (text(&f.file.name).into_owned(), f.line)
    };
    lcf.collect_at = Some((file, line));
    let mut value = ngx_string!("$request_id");
    lcf.request_id = match compile(cf, &mut value) {
        Some(cv) => cv,
        None => return NGX_CONF_ERROR,
    };
    let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cf) else {
        return NGX_CONF_ERROR;
    };
    if clcf.handler.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    clcf.handler = Some(crate::collect::collect_handler);
    lcf.location_name = Some(clcf.name.as_bytes().to_vec());
    if let Some(mcf) = Module::main_conf_mut(cf) {
        mcf.ingest = true;
    }
    NGX_CONF_OK
}

extern "C" fn set_site_stats(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the parser state.
    install(
        unsafe { &mut *cf },
        crate::collect::site_stats_handler,
        |mcf| mcf.site_stats = true,
    )
}

/// Compiles `value` into a complex value from the configuration pool.
fn compile(cf: &mut ngx_conf_t, value: &mut ngx_str_t) -> Option<*mut ngx_http_complex_value_t> {
    // SAFETY: a complex value allocated from the configuration pool, compiled below.
    let cv = unsafe {
        ngx::ffi::ngx_pcalloc(cf.pool, size_of::<ngx_http_complex_value_t>())
            .cast::<ngx_http_complex_value_t>()
    };
    if cv.is_null() {
        return None;
    }
    // SAFETY: zeroed is the compiler's initial state; it reads `cf`, `value` and writes `cv`.
    let rc = unsafe {
        let mut ccv: ngx::ffi::ngx_http_compile_complex_value_t = core::mem::zeroed();
        ccv.cf = cf;
        ccv.value = value;
        ccv.complex_value = cv;
        ngx::ffi::ngx_http_compile_complex_value(&mut ccv)
    };
    (rc == ngx::ffi::NGX_OK as ngx_int_t).then_some(cv)
}

/// Once the `http` block is parsed: sets defaults, and has librdkafka check the producer's
/// whole configuration, so that `nginx -t` catches properties that do not work together.
pub fn init_main(cf: &mut ngx_conf_t, mcf: &mut MainConf) -> *mut c_char {
    if let Err(e) = msk_iam_options(cf, mcf) {
        return e;
    }
    if mcf.flush_timeout == UNSET_MSEC {
        mcf.flush_timeout = 10_000;
    }
    mcf.max_topics = match mcf.max_topics_conf {
        NGX_CONF_UNSET => DEFAULT_MAX_TOPICS,
        n if n >= 1 => n as usize,
        _ => return emerg(cf, format_args!("\"kafka_max_topics\" must be at least 1")),
    };
    if mcf.site_stats && mcf.sites.is_none() {
        return emerg(
            cf,
            format_args!("\"kafka_site_stats\" requires \"kafka_sites\""),
        );
    }
    if mcf.sites.is_some() {
        // Each configuration hashes addresses with a secret of its own.
        let Ok(mut random) = std::fs::File::open("/dev/urandom") else {
            return emerg(
                cf,
                format_args!("\"kafka_sites\": /dev/urandom cannot be read"),
            );
        };
        if std::io::Read::read_exact(&mut random, &mut mcf.ip_secret).is_err() {
            return emerg(
                cf,
                format_args!("\"kafka_sites\": /dev/urandom cannot be read"),
            );
        }
    }
    // Sites are counted, and rate-limited, in the metrics zone.
    if mcf.metrics || mcf.metrics_size != UNSET_SIZE || mcf.sites.is_some() {
        if mcf.metrics_size == UNSET_SIZE {
            mcf.metrics_size = DEFAULT_METRICS_SIZE;
        }
        if mcf.metrics_size < zone::MIN_SIZE {
            return emerg(
                cf,
                format_args!(
                    "\"kafka_metrics_zone\" must be at least {}k",
                    zone::MIN_SIZE / 1024
                ),
            );
        }
        mcf.metrics_zone = match crate::shm::add(cf, mcf.metrics_size) {
            Some(z) => z,
            None => return NGX_CONF_ERROR,
        };
    }
    if mcf.success_reports() && mcf.option("delivery.report.only.error") == Some("true") {
        let needs = if !mcf.metrics_zone.is_null() {
            "\"kafka_metrics\" counts deliveries"
        } else if mcf.spool.is_some() {
            "\"kafka_spool\" replays what was not acknowledged"
        } else {
            "\"kafka_delivery acked\" waits for acknowledgements"
        };
        return emerg(
            cf,
            format_args!("{needs}: \"delivery.report.only.error\" cannot be \"true\""),
        );
    }
    if (mcf.ready || mcf.spool.is_some()) && mcf.option("statistics.interval.ms") == Some("0") {
        let needs = if mcf.ready {
            "kafka_ready"
        } else {
            "kafka_spool"
        };
        return emerg(
            cf,
            format_args!(
                "\"{needs}\" needs librdkafka's statistics: \"statistics.interval.ms\" \
                 cannot be 0"
            ),
        );
    }
    if mcf.ingest {
        let config = mcf.producer_config();
        let values: Vec<&str> = mcf.options.iter().map(|(_, v)| v.as_str()).collect();
        if let Err(reason) = properties::check_producer(&config, &values) {
            return emerg(
                cf,
                format_args!("\"kafka_option\" properties do not work together: {reason}"),
            );
        }
    }
    NGX_CONF_OK
}

/// Inherits unset values from the enclosing level, then checks that an ingest location has
/// everything it needs.
///
/// # Safety
/// `cf` must be the configuration being merged, with this module's main configuration.
pub unsafe fn merge_location(
    cf: &mut ngx_conf_t,
    prev: &LocationConf,
    conf: &mut LocationConf,
) -> *mut c_char {
    if conf.topic.is_null() {
        conf.topic = prev.topic;
    }
    if conf.key.is_null() {
        conf.key = prev.key;
    }
    // SAFETY: null, or compiled by `ngx_http_set_complex_value_slot` for the cycle.
    conf.topic_var =
        unsafe { conf.topic.as_ref() }.and_then(|cv| crate::http::lone_variable(cf, cv));
    // SAFETY: as above.
    conf.key_var = unsafe { conf.key.as_ref() }.and_then(|cv| crate::http::lone_variable(cf, cv));
    if conf.allowed_topics.is_none() {
        conf.allowed_topics = prev.allowed_topics.clone();
    }
    if conf.value_format == UNSET_UINT {
        conf.value_format = if prev.value_format == UNSET_UINT {
            VALUE_FORMAT_RAW
        } else {
            prev.value_format
        };
    }
    if conf.retry_after == UNSET_SEC {
        conf.retry_after = if prev.retry_after == UNSET_SEC {
            1
        } else {
            prev.retry_after
        };
    }

    if conf.status_zone.is_none() {
        conf.status_zone = prev.status_zone.clone();
    }
    if conf.delivery == UNSET_UINT {
        conf.delivery = if prev.delivery == UNSET_UINT {
            DELIVERY_QUEUED
        } else {
            prev.delivery
        };
    }
    if conf.ack_timeout == UNSET_MSEC {
        conf.ack_timeout = if prev.ack_timeout == UNSET_MSEC {
            5000
        } else {
            prev.ack_timeout
        };
    }
    if conf.headers.is_none() {
        conf.headers = prev.headers.clone();
    }
    let inherit = |v: &mut ngx_uint_t, p: ngx_uint_t, default: ngx_uint_t| {
        if *v == UNSET_UINT {
            *v = if p == UNSET_UINT { default } else { p };
        }
    };
    inherit(&mut conf.client_ip, prev.client_ip, CLIENT_IP_FULL);
    inherit(&mut conf.dnt, prev.dnt, DNT_OFF);
    inherit(&mut conf.max_events, prev.max_events, 1000);
    if conf.max_event_size == UNSET_SIZE {
        conf.max_event_size = if prev.max_event_size == UNSET_SIZE {
            32 * 1024
        } else {
            prev.max_event_size
        };
    }

    if conf.collect_at.is_some() {
        // SAFETY: as this function's.
        return unsafe { merge_collect(cf, conf) };
    }
    let Some((file, line)) = conf.ingest_at.clone() else {
        return NGX_CONF_OK;
    };
    conf.scope = conf
        .status_zone
        .clone()
        .or_else(|| conf.location_name.clone())
        .unwrap_or_default();
    let at = format!("in {file}:{line}");
    let fail = |cf: &mut ngx_conf_t, what: std::fmt::Arguments| {
        // SAFETY: `cf.log` is the configuration log while nginx merges.
        ngx::ngx_log_error!(NGX_LOG_EMERG, cf.log, "{what} {at}");
        NGX_CONF_ERROR
    };

    let has_brokers = Module::main_conf(cf).is_some_and(|m| m.brokers.is_some());
    let has_spool = Module::main_conf(cf).is_some_and(|m| m.spool.is_some());
    match conf.delivery() {
        Delivery::Durable if !has_spool => {
            return fail(
                cf,
                format_args!("\"kafka_delivery durable\" requires \"kafka_spool\""),
            );
        }
        _ => {}
    }
    if !has_brokers {
        return fail(
            cf,
            format_args!("\"kafka_ingest\" requires \"kafka_brokers\""),
        );
    }
    // SAFETY: a non-null complex value was compiled by `ngx_http_set_complex_value_slot`.
    let Some(topic) = (unsafe { conf.topic.as_ref() }) else {
        return fail(
            cf,
            format_args!("\"kafka_ingest\" requires \"kafka_topic\""),
        );
    };
    if topic.lengths.is_null() {
        let name = topic.value.as_bytes();
        let name_text = String::from_utf8_lossy(name).into_owned();
        if !is_legal_topic(name) {
            return fail(
                cf,
                format_args!("invalid topic name \"{name_text}\" in \"kafka_topic\" directive"),
            );
        }
        if let Some(list) = &conf.allowed_topics {
            if !list.iter().any(|p| p.matches(name)) {
                return fail(
                    cf,
                    format_args!("topic \"{name_text}\" is not in \"kafka_allowed_topics\""),
                );
            }
        }
        if let Some(mcf) = Module::main_conf_mut(cf) {
            if !mcf.fixed_topics.contains(&name_text) {
                mcf.fixed_topics.push(name_text);
            }
        }
    } else if conf.allowed_topics.is_none() {
        return fail(
            cf,
            format_args!(
                "\"kafka_topic\" with variables requires \"kafka_allowed_topics\", so that \
                 clients cannot name any topic"
            ),
        );
    }
    NGX_CONF_OK
}

/// Checks a `kafka_collect` location: it needs brokers, sites, and a topic for every site.
///
/// # Safety
/// As `merge_location`.
unsafe fn merge_collect(cf: &mut ngx_conf_t, conf: &mut LocationConf) -> *mut c_char {
    let Some((file, line)) = conf.collect_at.clone() else {
        return NGX_CONF_OK;
    };
    conf.scope = conf
        .status_zone
        .clone()
        .or_else(|| conf.location_name.clone())
        .unwrap_or_default();
    let at = format!("in {file}:{line}");
    let fail = |cf: &mut ngx_conf_t, what: std::fmt::Arguments| {
        ngx::ngx_log_error!(NGX_LOG_EMERG, cf.log, "{what} {at}");
        NGX_CONF_ERROR
    };
    let Some(mcf) = Module::main_conf(cf) else {
        return NGX_CONF_ERROR;
    };
    if mcf.brokers.is_none() {
        return fail(
            cf,
            format_args!("\"kafka_collect\" requires \"kafka_brokers\""),
        );
    }
    let Some(sites) = mcf.sites.as_deref() else {
        return fail(
            cf,
            format_args!("\"kafka_collect\" requires \"kafka_sites\""),
        );
    };
    let batch = mcf.spool.as_ref().is_some_and(|s| s.fsync_batch);
    match conf.delivery() {
        Delivery::Acked => {
            return fail(
                cf,
                format_args!("\"kafka_collect\" takes \"kafka_delivery queued\" or \"durable\""),
            )
        }
        Delivery::Durable if mcf.spool.is_none() => {
            return fail(
                cf,
                format_args!("\"kafka_delivery durable\" requires \"kafka_spool\""),
            )
        }
        Delivery::Durable if batch => {
            return fail(
                cf,
                format_args!("\"kafka_collect\" cannot wait for \"kafka_spool ... fsync=batch\""),
            )
        }
        _ => {}
    }
    // SAFETY: a non-null complex value was compiled by `ngx_http_set_complex_value_slot`.
    match unsafe { conf.topic.as_ref() } {
        None => {
            if let Some(site) = sites.sites.iter().find(|s| s.topic.is_none()) {
                let id = site.id.clone();
                return fail(
                    cf,
                    format_args!(
                        "site \"{id}\" has no topic: \"kafka_collect\" requires \"kafka_topic\""
                    ),
                );
            }
        }
        Some(topic) if topic.lengths.is_null() && !is_legal_topic(topic.value.as_bytes()) => {
            let name = String::from_utf8_lossy(topic.value.as_bytes()).into_owned();
            return fail(
                cf,
                format_args!("invalid topic name \"{name}\" in \"kafka_topic\" directive"),
            );
        }
        Some(_) => {}
    }
    NGX_CONF_OK
}
