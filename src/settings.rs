//! The walg.* settings (GUCs), registered from walg_core's registry of settings, and their
//! translation into one `walg_core::Config`.
//!
//! Every GUC comes from one registry entry (`walg_core::config::registry::ALL`); nothing here
//! names a setting except `walg.config_file`. Integers carry PostgreSQL units where they have
//! one (bytes: `'64MB'` works, `SHOW` prints it so). A GUC left at its default (source
//! PGC_S_DEFAULT: not in postgresql.conf, postgresql.auto.conf or the command line) defers to
//! `walg.config_file` (WAL-G's file and key names), then to the registry's default; a string
//! set to '' counts as not set, as before. Secrets are never GUCs.
//!
//! GUC storage must live as long as the process: `_PG_init` runs once per process, so each
//! setting's variable is leaked once there.
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::{CStr, CString};
use std::sync::OnceLock;
use walg_core::config::registry::{self as r, Kind, Unit, Value};
use walg_core::config::{Config, Settings};

static CONFIG_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Secrets taken from the server's environment (never from a GUC): they override the file, as
/// WAL-G's environment overrides its file. (AWS keys in the environment are read by the AWS
/// SDK's default chain when the file has none.)
const SECRET_ENV: &[&str] = &[r::LIBSODIUM_KEY.key, r::PGP_KEY.key, r::PGP_KEY_PASSPHRASE.key];

/// Where a registered GUC's value lives.
enum Var {
    Text(&'static GucSetting<Option<CString>>),
    Int(&'static GucSetting<i32>, Option<i64>),
    Bool(&'static GucSetting<bool>),
    /// Index into the values (DefineCustomEnumVariable's storage).
    Enum(*mut i32, &'static [&'static str]),
}

struct Registered {
    setting: &'static r::Setting,
    var: Var,
    /// PostgreSQL's record of the GUC (stable once defined), for its source.
    generic: *mut pg_sys::config_generic,
}

/// The registered GUCs of this process. Only the main thread touches them (pgrx's rule for
/// everything PostgreSQL), so the raw pointers are never shared across threads in practice.
struct Table(Vec<Registered>);
unsafe impl Send for Table {}
unsafe impl Sync for Table {}
static TABLE: OnceLock<Table> = OnceLock::new();

fn leak_cstr(s: &str) -> &'static CStr {
    Box::leak(CString::new(s).expect("registry text has no NUL").into_boxed_c_str())
}

fn unit_flags(unit: Unit) -> GucFlags {
    match unit {
        Unit::None => GucFlags::default(),
        Unit::Bytes | Unit::BytesPerSecond => GucFlags::UNIT_BYTE,
        Unit::Milliseconds => GucFlags::UNIT_MS,
        Unit::Seconds => GucFlags::UNIT_S,
    }
}

/// PostgreSQL's record of GUC `name` (after it is defined).
fn find_generic(name: &str) -> *mut pg_sys::config_generic {
    unsafe {
        let vars = pg_sys::get_guc_variables();
        for i in 0..pg_sys::GetNumConfigOptions().max(0) as usize {
            let g = *vars.add(i);
            if !g.is_null() && CStr::from_ptr((*g).name).to_bytes().eq_ignore_ascii_case(name.as_bytes()) {
                return g;
            }
        }
    }
    std::ptr::null_mut()
}

fn define(setting: &'static r::Setting, guc: &'static str) -> Var {
    let name = leak_cstr(guc);
    let short = leak_cstr(&setting.doc.replace('`', ""));
    let default = setting.default_doc().replace('`', "");
    let long = leak_cstr(&format!(
        "WAL-G key {}. Not set in postgresql.conf, the value comes from walg.config_file, else the default ({default}).",
        setting.key
    ));
    let ctx = || match setting.context {
        r::Context::Reload => GucContext::Sighup,
        r::Context::Restart => GucContext::Postmaster,
    };
    let default_value = setting.default_value();
    match (setting.kind, default_value) {
        (Kind::Int { min, max, unit, unset }, default) => {
            let boot = match default {
                Some(Value::Int(n)) => n,
                _ => unset.expect("an integer with no default has an unset value (registry test)"),
            };
            let lo = unset.map_or(min, |u| u.min(min)).max(i32::MIN as i64) as i32;
            let hi = unset.map_or(max, |u| u.max(max)).min(i32::MAX as i64) as i32;
            let var: &'static GucSetting<i32> = Box::leak(Box::new(GucSetting::<i32>::new(boot as i32)));
            GucRegistry::define_int_guc(name, short, long, var, lo, hi, ctx(), unit_flags(unit));
            Var::Int(var, unset)
        }
        (Kind::Bool, default) => {
            let boot = matches!(default, Some(Value::Bool(true)));
            let var: &'static GucSetting<bool> = Box::leak(Box::new(GucSetting::<bool>::new(boot)));
            GucRegistry::define_bool_guc(name, short, long, var, ctx(), GucFlags::default());
            Var::Bool(var)
        }
        (Kind::Enum(values), Some(Value::Choice(default))) => {
            let boot = values.iter().position(|v| *v == default).expect("default is a value") as i32;
            let mut entries: Vec<pg_sys::config_enum_entry> = values
                .iter()
                .enumerate()
                .map(|(i, v)| pg_sys::config_enum_entry { name: leak_cstr(v).as_ptr(), val: i as i32, hidden: false })
                .collect();
            entries.push(pg_sys::config_enum_entry { name: std::ptr::null(), val: 0, hidden: false });
            let entries: &'static [pg_sys::config_enum_entry] = Box::leak(entries.into_boxed_slice());
            let var: *mut i32 = Box::leak(Box::new(boot));
            let context = match setting.context {
                r::Context::Reload => pg_sys::GucContext::PGC_SIGHUP,
                r::Context::Restart => pg_sys::GucContext::PGC_POSTMASTER,
            };
            unsafe {
                pg_sys::DefineCustomEnumVariable(
                    name.as_ptr(),
                    short.as_ptr(),
                    long.as_ptr(),
                    var,
                    boot,
                    entries.as_ptr(),
                    context,
                    0,
                    None,
                    None,
                    None,
                );
            }
            Var::Enum(var, values)
        }
        // Text, and enums without a default (a GUC enum needs a value to show): a string GUC,
        // checked against the registry when the config is built.
        (Kind::Text | Kind::Enum(_), _) => {
            let var: &'static GucSetting<Option<CString>> =
                Box::leak(Box::new(GucSetting::<Option<CString>>::new(None)));
            GucRegistry::define_string_guc(name, short, long, var, ctx(), GucFlags::default());
            Var::Text(var)
        }
    }
}

pub fn register() {
    GucRegistry::define_string_guc(
        leak_cstr(r::CONFIG_FILE_GUC),
        leak_cstr(&r::CONFIG_FILE_DOC.replace('`', "")),
        c"The file may hold secrets: make it readable by the server user only.",
        &CONFIG_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    let mut table = Vec::new();
    for &setting in r::ALL {
        let Some(guc) = setting.guc else { continue };
        let var = define(setting, guc);
        table.push(Registered { setting, var, generic: find_generic(guc) });
    }
    // walg.* names that are not ours (a typo in postgresql.conf) get a WARNING and are removed,
    // instead of being kept as silent placeholders.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"walg".as_ptr()) };
    let _ = TABLE.set(Table(table));
}

fn guc_str(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get().map(|c| c.to_string_lossy().into_owned()).filter(|v| !v.trim().is_empty())
}

impl Registered {
    /// Left at its built-in default (not set anywhere PostgreSQL reads settings from).
    fn at_default(&self) -> bool {
        self.generic.is_null() || unsafe { (*self.generic).source } == pg_sys::GucSource::PGC_S_DEFAULT
    }

    /// The value this GUC contributes as a WAL-G setting, or None to defer to the file.
    fn value(&self) -> Option<String> {
        match self.var {
            Var::Text(var) => guc_str(var),
            _ if self.at_default() => None,
            Var::Int(var, unset) => Some(var.get()).filter(|&v| Some(v as i64) != unset).map(|v| v.to_string()),
            Var::Bool(var) => Some(var.get().to_string()),
            Var::Enum(var, values) => values.get(unsafe { *var } as usize).map(|v| v.to_string()),
        }
    }
}

/// The walg.* GUCs that are set, as WAL-G key/value pairs.
pub fn guc_settings() -> Settings {
    let mut over = Settings::default();
    for reg in TABLE.get().map(|t| t.0.as_slice()).unwrap_or_default() {
        if let Some(v) = reg.value() {
            over.set(reg.setting.key, v);
        }
    }
    over
}

/// `walg.config_file`, when set (a path, never a secret itself: a drill's child reads it).
pub fn config_file() -> Option<std::path::PathBuf> {
    guc_str(&CONFIG_FILE).map(std::path::PathBuf::from)
}

/// The effective configuration: `walg.config_file`, overridden by the server's environment for
/// secrets and by the walg.* settings that are set.
pub fn load_config() -> walg_core::Result<Config> {
    let mut settings = match guc_str(&CONFIG_FILE) {
        Some(path) => {
            let file = Settings::from_file(std::path::Path::new(&path))?;
            log_once(r::check_keys(&file, r::Origin::File).unwrap_or_default());
            file
        }
        None => Settings::default(),
    };
    for key in SECRET_ENV {
        if let Some(v) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
            settings.set(*key, v);
        }
    }
    settings.merge(&guc_settings());
    Config::from_settings(&settings)
}

/// WAL-G keys in the file that walg_ext ignores: said once per process in the server log (the
/// archiver loads the config for every segment).
fn log_once(warnings: Vec<String>) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !warnings.is_empty() && !DONE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        for w in warnings {
            pgrx::log!("walg_ext: {w}");
        }
    }
}

/// Data directory of this server.
pub fn data_dir() -> std::path::PathBuf {
    unsafe { CStr::from_ptr(pgrx::pg_sys::DataDir) }.to_string_lossy().into_owned().into()
}
