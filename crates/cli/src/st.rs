//! `walg-ext st`: WAL-G's storage tools, for the operator who needs to look at or repair one
//! object: ls, get, put, cat, rm, check read|write. Names, arguments and defaults are WAL-G's
//! (cmd/common/st): `get` decrypts and decompresses unless told not to (`--no-decrypt`,
//! `--no-decompress`); `cat` writes the raw object unless asked (`--decrypt`, `--decompress`);
//! `put` compresses (adding the method's extension to the name) and encrypts with the
//! configured method and key unless told not to, and refuses to overwrite without `-f`.
//!
//! Invariants: `get` never leaves a partial file at the destination (it writes a temporary file
//! beside it and renames it when the whole object was read and decoded, every codec check
//! passed); "not found" (exit 3) only when storage answered that the object is not there;
//! `rm` of nothing is "not found" too, and `rm` needs a non-empty prefix (WAL-G's `rm ""` would
//! delete the whole storage).
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use walg_core::codec::{decompress_reader, extension_of, read_error, Compression};
use walg_core::storage::Storage;
use walg_core::{Error, Result};

use crate::commands::{load_config, print_table, rfc3339};

/// A key as given on the command line: without a leading `/`, never empty.
fn object_key(arg: &str) -> Result<String> {
    let key = arg.trim_start_matches('/').to_string();
    if key.is_empty() || key.ends_with('/') {
        return Err(Error::InvalidArgument(format!("{arg:?} is not an object key (e.g. wal_005/000000010000000000000001.lz4)")));
    }
    Ok(key)
}

/// `st ls [prefix]`: objects under a prefix (recursive), with size and modification time.
pub fn ls(config: Option<&Path>, prefix: &str) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let prefix = prefix.trim_start_matches('/');
    let mut table = vec![vec!["key".to_string(), "size".into(), "modified".into()]];
    for o in storage.list(prefix)? {
        table.push(vec![o.key, o.size.to_string(), rfc3339(o.modified)]);
    }
    print_table(&table);
    Ok(())
}

/// The object's stream, decrypted and/or decompressed as asked.
fn open(config: Option<&Path>, arg: &str, decrypt: bool, decompress: bool) -> Result<(String, Box<dyn Read + Send>)> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let key = object_key(arg)?;
    let raw = storage
        .get(&key)?
        .ok_or_else(|| Error::NotFound(format!("object {key} is not in {}", storage.describe())))?;
    let pipeline = cfg.pipeline();
    let r = if decrypt { pipeline.decrypt_reader(&key, raw)? } else { raw };
    let ext = extension_of(&key);
    let r = if decompress && !ext.is_empty() {
        decompress_reader(ext, &key, r)?
    } else {
        if decompress {
            eprintln!("walg-ext: {key} has no known compression extension ({}): not decompressed", known_extensions());
        }
        r
    };
    Ok((key, r))
}

fn known_extensions() -> String {
    walg_core::codec::READ_EXTENSIONS.iter().filter(|e| !e.is_empty()).map(|e| format!(".{e}")).collect::<Vec<_>>().join(", ")
}

/// Copy the object to `w`; read errors name the object, write errors the local `dest`.
fn copy(key: &str, r: &mut dyn Read, w: &mut dyn Write, dest: &str) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(key, e)),
        };
        w.write_all(&buf[..n]).map_err(|e| Error::Io { path: dest.to_string(), source: e })?;
        total += n as u64;
    }
}

/// `st get OBJECT DEST`: download to DEST (a directory: DEST/<object's base name>), which must
/// not exist yet.
pub fn get(config: Option<&Path>, object: &str, dest: &Path, decrypt: bool, decompress: bool) -> Result<()> {
    let key = object_key(object)?;
    let target: PathBuf = if dest.is_dir() {
        dest.join(key.rsplit('/').next().unwrap_or(&key))
    } else {
        dest.to_path_buf()
    };
    if target.symlink_metadata().is_ok() {
        return Err(Error::Refused(format!("{} exists: remove it or choose another destination", target.display())));
    }
    let (key, mut r) = open(config, &key, decrypt, decompress)?;
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.walg-tmp-{}", std::process::id()));
    let local = |e: io::Error, p: &Path| Error::Io { path: p.display().to_string(), source: e };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| local(e, &tmp))?;
    let done = copy(&key, &mut r, &mut f, &tmp.display().to_string()).and_then(|n| {
        f.sync_all().map_err(|e| local(e, &tmp))?;
        // No overwrite: a file that appeared at the target meanwhile is kept (hard link fails).
        std::fs::hard_link(&tmp, &target).map_err(|e| local(e, &target))?;
        Ok(n)
    });
    let _ = std::fs::remove_file(&tmp);
    let n = done?;
    eprintln!("walg-ext: {key} -> {} ({n} bytes)", target.display());
    Ok(())
}

/// `st cat OBJECT`: the object on stdout (raw unless `--decrypt` / `--decompress`).
pub fn cat(config: Option<&Path>, object: &str, decrypt: bool, decompress: bool) -> Result<()> {
    let (key, mut r) = open(config, object, decrypt, decompress)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match copy(&key, &mut r, &mut out, "stdout") {
        // A reader that stopped early (`| head`) is not an error of ours.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.and_then(|_| out.flush().or_else(|e| if e.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(Error::Io { path: "stdout".into(), source: e }) })),
    }
}

/// `st put LOCAL DEST` (or `-s DEST` from stdin): upload as DEST + the compression's extension,
/// compressed and encrypted as configured unless `--no-compress` / `--no-encrypt`.
pub fn put(config: Option<&Path>, source: Option<&Path>, dest: &str, opts: PutOptions) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let mut pipeline = cfg.pipeline();
    if opts.no_encrypt {
        pipeline = pipeline.without_encryption();
    }
    if opts.no_compress {
        pipeline.compression = Compression::None;
    }
    let key = pipeline.object_name(&object_key(dest)?);
    let mut input: Box<dyn Read> = match source {
        Some(path) => {
            if path.is_dir() {
                return Err(Error::InvalidArgument(format!("{} is a directory", path.display())));
            }
            Box::new(std::fs::File::open(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?)
        }
        None => Box::new(io::stdin()),
    };
    if !opts.force && storage.exists(&key)? {
        return Err(Error::Refused(format!("object {key} already exists: add -f to overwrite it")));
    }
    storage.prepare_write()?;
    let mut w = pipeline.writer(storage.writer(&key)?)?;
    let what = source.map(|p| p.display().to_string()).unwrap_or_else(|| "stdin".into());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io { path: what, source: e }),
        };
        w.write_all(&buf[..n]).map_err(|e| Error::storage("write", &key, e))?;
    }
    let stored = w.finish()?;
    eprintln!("walg-ext: {what} -> {key} ({stored} bytes stored)");
    Ok(())
}

#[derive(Clone, Copy, Default)]
pub struct PutOptions {
    pub no_encrypt: bool,
    pub no_compress: bool,
    pub force: bool,
}

/// `st rm PREFIX`: delete the object PREFIX and every object under PREFIX/ (WAL-G's rule).
pub fn rm(config: Option<&Path>, prefix: &str) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        return Err(Error::InvalidArgument(
            "st rm needs a prefix (an object or a folder): it will not delete the whole storage".into(),
        ));
    }
    let folder = format!("{p}/");
    let keys: Vec<String> = storage
        .list(p)?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k == p || k.starts_with(&folder))
        .collect();
    if keys.is_empty() {
        return Err(Error::NotFound(format!("object or folder {p:?} does not exist in {}", storage.describe())));
    }
    for k in &keys {
        storage.delete(k)?;
        println!("deleted: {k}");
    }
    Ok(())
}

/// `st check read [OBJECT...]`: the storage can be listed and each object exists.
pub fn check_read(config: Option<&Path>, objects: &[String]) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    // Reachable: the answer "not there" for a name nobody uses needs a readable storage.
    storage.exists("walg-ext-read-check")?;
    let mut missing = Vec::new();
    for o in objects {
        let key = object_key(o)?;
        if !storage.exists(&key)? {
            missing.push(key);
        }
    }
    if !missing.is_empty() {
        return Err(Error::NotFound(format!("objects missing from {}: {}", storage.describe(), missing.join(", "))));
    }
    eprintln!("walg-ext: read check OK ({})", storage.describe());
    Ok(())
}

/// `st check write`: an object can be written and deleted (a random name at the top).
pub fn check_write(config: Option<&Path>) -> Result<()> {
    let cfg = load_config(config)?;
    let storage: std::sync::Arc<dyn Storage> = cfg.open_storage()?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let key = format!("walg-ext-write-check-{}-{nanos:x}", std::process::id());
    storage.prepare_write()?;
    let put = storage.put(&key, b"test");
    let del = storage.delete(&key);
    put?;
    if let Err(e) = del {
        eprintln!("walg-ext: warning: could not remove {key}: {e}");
    }
    eprintln!("walg-ext: write check OK ({})", storage.describe());
    Ok(())
}
