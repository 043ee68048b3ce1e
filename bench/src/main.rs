//! `archive-bench`: times Oar's cache format (tar.zst) and artifact format (zip) against the
//! reference tools on a generated tree, and prints a table of seconds, sizes and ratios.
//!
//! Not a test: run it by hand, in release mode (see `bench/README.md`).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Parser;
use oar_archive::archive::{CreateOptions, Format, Limits, available_threads, create, extract};
use oar_archive::select::{PathSpec, select};

/// Benchmark Oar's archives against zip/unzip, tar+gzip and tar+zstd.
#[derive(Debug, Parser)]
#[command(name = "archive-bench")]
struct Args {
    /// Number of small files.
    #[arg(long, default_value_t = 50_000)]
    small_files: u64,
    /// Smallest small-file size in bytes.
    #[arg(long, default_value_t = 200)]
    small_min: u64,
    /// Largest small-file size in bytes.
    #[arg(long, default_value_t = 4_000)]
    small_max: u64,
    /// Number of big files.
    #[arg(long, default_value_t = 3)]
    big_files: u64,
    /// Size of each big file in MiB.
    #[arg(long, default_value_t = 100)]
    big_mib: u64,
    /// Work directory (a temporary one under it is used and removed).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// zstd level for Oar's cache and for `zstd`.
    #[arg(long, default_value_t = 3)]
    zstd_level: i32,
    /// Compression threads for Oar (default: available cores, like `zstd -T0`).
    #[arg(long)]
    threads: Option<u32>,
    /// Runs per measurement; the best one is kept.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Skip the reference tools (only time Oar).
    #[arg(long)]
    oar_only: bool,
    /// Instead of the benchmark: time Oar's extraction of this archive (into `--into`).
    #[arg(long, requires = "into")]
    extract: Option<PathBuf>,
    /// The directory for `--extract`.
    #[arg(long)]
    into: Option<PathBuf>,
    /// Instead of the benchmark: time Oar's cache creation (select + create) of this directory
    /// into `--out`.
    #[arg(long, requires = "out")]
    create_from: Option<PathBuf>,
    /// The archive for `--create-from` (format from the extension: .zip, else tar.zst).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A deterministic PRNG (splitmix64), so every run builds the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "mut", "impl", "struct", "enum", "match", "return", "self", "Some", "None", "Ok",
    "Err", "async", "await", "pub", "use", "crate", "super", "where", "for", "in", "if", "else",
    "loop", "while", "break", "continue", "const", "static", "type", "trait", "dyn", "move", "ref",
    "true", "false", "Vec", "String", "Option", "Result", "Box", "Arc", "Mutex", "HashMap",
    "config", "runner", "job", "artifact", "cache", "archive", "token", "trace", "stage", "script",
    "pipeline", "variable", "request", "response", "status", "error", "warning", "debug", "info",
    "value", "index", "length", "buffer", "reader", "writer", "stream", "future", "handle",
    "context", "options", "builder", "parser", "header", "payload", "timeout", "retry", "limit",
    "=", "+=", "->", "=>", "::", "{", "}", "(", ")", ";", ",", ".", "&", "*", "<", ">", "#",
];

/// Semi-compressible text: source-like lines of words, numbers and hex ids.
fn text(rng: &mut Rng, size: usize, out: &mut Vec<u8>) {
    out.clear();
    while out.len() < size {
        for _ in 0..rng.below(4) {
            out.extend_from_slice(b"    ");
        }
        let words = 3 + rng.below(10);
        for w in 0..words {
            if w > 0 {
                out.push(b' ');
            }
            match rng.below(12) {
                0 => {
                    out.extend_from_slice(format!("{}", rng.below(100_000)).as_bytes());
                }
                1 => out.extend_from_slice(format!("0x{:08x}", rng.next() as u32).as_bytes()),
                _ => {
                    out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes())
                }
            }
        }
        out.push(b'\n');
    }
    out.truncate(size);
}

fn generate(root: &Path, args: &Args) -> Result<(u64, u64)> {
    let mut rng = Rng(0x0A12_C0DE);
    let mut buf = Vec::new();
    let mut bytes = 0;
    let exts = ["rs", "txt", "json", "o", "d", "log"];
    for i in 0..args.small_files {
        let dir = root.join(format!("small/d{:02}/m{:02}", i / 2500, (i / 100) % 25));
        if i % 100 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let span = args.small_max.saturating_sub(args.small_min) + 1;
        let size = args.small_min + rng.below(span);
        text(&mut rng, size as usize, &mut buf);
        let ext = exts[(i % exts.len() as u64) as usize];
        fs::write(dir.join(format!("f{i:06}.{ext}")), &buf)?;
        bytes += size;
    }
    if args.big_files > 0 {
        fs::create_dir_all(root.join("big"))?;
    }
    for k in 0..args.big_files {
        let mut w = BufWriter::with_capacity(
            1 << 20,
            fs::File::create(root.join(format!("big/blob{k}.log")))?,
        );
        let total = args.big_mib << 20;
        let mut written = 0u64;
        while written < total {
            let n = (total - written).min(1 << 20);
            text(&mut rng, n as usize, &mut buf);
            w.write_all(&buf)?;
            written += n;
        }
        w.flush()?;
        bytes += total;
    }
    Ok((args.small_files + args.big_files, bytes))
}

/// Wall-clock seconds of `f`. The workspace bans `std::time::Instant` so that async code uses
/// tokio's pausable clock; this synchronous benchmark has no such clock to share.
#[allow(clippy::disallowed_types)]
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let start = std::time::Instant::now();
    let v = f()?;
    Ok((start.elapsed().as_secs_f64(), v))
}

fn sh(script: &str) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .context("running sh")?;
    if !status.success() {
        bail!("`{script}` failed: {status}");
    }
    Ok(())
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

struct Row {
    name: &'static str,
    create: f64,
    extract: f64,
    size: u64,
}

impl Row {
    fn total(&self) -> f64 {
        self.create + self.extract
    }
}

/// Creates an archive.
type CreateFn<'a> = Box<dyn FnMut() -> Result<()> + 'a>;
/// Extracts an archive into the given directory.
type ExtractFn<'a> = Box<dyn FnMut(&Path) -> Result<()> + 'a>;

/// One contender: how to create its archive and how to extract it.
struct Tool<'a> {
    name: &'static str,
    archive: PathBuf,
    create: CreateFn<'a>,
    extract: ExtractFn<'a>,
}

/// Runs every tool's create then extract, `runs` rounds in turn (so that no tool always runs
/// right after the same other), keeping the best time of each.
fn measure(tools: &mut [Tool<'_>], runs: u32, work: &Path) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = tools
        .iter()
        .map(|t| Row {
            name: t.name,
            create: f64::MAX,
            extract: f64::MAX,
            size: 0,
        })
        .collect();
    for round in 0..runs.max(1) {
        for (tool, best) in tools.iter_mut().zip(rows.iter_mut()) {
            let _ = fs::remove_file(&tool.archive);
            // Flush what earlier steps wrote, so that no tool pays for another's writeback.
            sync();
            let (c, ()) = timed(&mut tool.create)?;
            let size = fs::metadata(&tool.archive)
                .with_context(|| format!("{}: no archive", tool.name))?
                .len();
            let dst = work.join("extracted");
            let _ = fs::remove_dir_all(&dst);
            fs::create_dir_all(&dst)?;
            sync();
            let (x, ()) = timed(|| (tool.extract)(&dst))?;
            fs::remove_dir_all(&dst)?;
            let _ = fs::remove_file(&tool.archive);
            eprintln!(
                "  round {}: {}: create {c:.2}s extract {x:.2}s size {size}",
                round + 1,
                tool.name
            );
            best.create = best.create.min(c);
            best.extract = best.extract.min(x);
            best.size = size;
        }
    }
    Ok(rows)
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(archive), Some(into)) = (&args.extract, &args.into) {
        let limits = Limits {
            max_bytes: u64::MAX,
            max_entries: u64::MAX,
        };
        let (secs, stats) = timed(|| Ok(extract(archive, into, &limits)?))?;
        println!("extracted {stats:?} in {secs:.2}s");
        return Ok(());
    }
    if let (Some(src), Some(out)) = (&args.create_from, &args.out) {
        let format = if out.extension().is_some_and(|e| e == "zip") {
            Format::Zip
        } else {
            Format::TarZst
        };
        let threads = args.threads.unwrap_or_else(available_threads);
        let paths = vec![".".to_string()];
        let (secs, stats) = timed(|| {
            let sel = select(
                src,
                &PathSpec {
                    paths: &paths,
                    exclude: &[],
                    untracked: false,
                },
            )?;
            let opts = CreateOptions {
                format,
                zstd_level: args.zstd_level,
                threads,
            };
            Ok(create(src, &sel, out, &opts)?)
        })?;
        println!("created {stats:?} in {secs:.2}s");
        return Ok(());
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&base)?;
    let work = tempfile::Builder::new()
        .prefix("oar-archive-bench-")
        .tempdir_in(&base)?;
    let src = work.path().join("src");
    fs::create_dir_all(&src)?;
    eprintln!("generating the tree in {} ...", src.display());
    let (files, input) = generate(&src, &args)?;
    let threads = args.threads.unwrap_or_else(available_threads);
    eprintln!(
        "{files} files, {:.1} MiB; {threads} threads, zstd level {}",
        input as f64 / 1048576.0,
        args.zstd_level
    );

    let limits = Limits {
        max_bytes: u64::MAX,
        max_entries: u64::MAX,
    };
    let paths = vec![".".to_string()];
    let oar_create = |format: Format, archive: PathBuf| {
        let (src, paths) = (src.clone(), paths.clone());
        move || -> Result<()> {
            let sel = select(
                &src,
                &PathSpec {
                    paths: &paths,
                    exclude: &[],
                    untracked: false,
                },
            )?;
            let opts = CreateOptions {
                format,
                zstd_level: args.zstd_level,
                threads,
            };
            create(&src, &sel, &archive, &opts)?;
            Ok(())
        }
    };
    let oar_extract = |archive: PathBuf| {
        move |dst: &Path| -> Result<()> {
            extract(&archive, dst, &limits)?;
            Ok(())
        }
    };
    let w = work.path();
    let mut tools = vec![
        Tool {
            name: "oar cache (tar.zst)",
            archive: w.join("oar-cache.tar.zst"),
            create: Box::new(oar_create(Format::TarZst, w.join("oar-cache.tar.zst"))),
            extract: Box::new(oar_extract(w.join("oar-cache.tar.zst"))),
        },
        Tool {
            name: "oar zip",
            archive: w.join("oar-artifacts.zip"),
            create: Box::new(oar_create(Format::Zip, w.join("oar-artifacts.zip"))),
            extract: Box::new(oar_extract(w.join("oar-artifacts.zip"))),
        },
    ];
    if !args.oar_only {
        for tool in ["zip", "unzip", "tar", "gzip", "zstd"] {
            if !have(tool) {
                bail!(
                    "`{tool}` is not installed (apt-get install zip unzip zstd), or pass --oar-only"
                );
            }
        }
        let (s, lvl) = (quote(&src), args.zstd_level);
        let shell = |script: String| move || sh(&script);
        let shell_x = |script: &'static str, archive: String| {
            move |dst: &Path| sh(&script.replace("{a}", &archive).replace("{d}", &quote(dst)))
        };
        let (zip, tgz, tzst) = (
            w.join("ref.zip"),
            w.join("ref.tar.gz"),
            w.join("ref.tar.zst"),
        );
        tools.push(Tool {
            name: "zip -r -6 + unzip",
            create: Box::new(shell(format!(
                "cd {s} && zip -r -6 -q -y {} .",
                quote(&zip)
            ))),
            extract: Box::new(shell_x("unzip -q {a} -d {d}", quote(&zip))),
            archive: zip,
        });
        tools.push(Tool {
            name: "tar | gzip",
            create: Box::new(shell(format!(
                "tar -C {s} -cf - . | gzip -6 > {}",
                quote(&tgz)
            ))),
            extract: Box::new(shell_x("tar -xzf {a} -C {d}", quote(&tgz))),
            archive: tgz,
        });
        tools.push(Tool {
            name: "tar | zstd -T0",
            create: Box::new(shell(format!(
                "tar -C {s} -cf - . | zstd -T0 -{lvl} -q > {}",
                quote(&tzst)
            ))),
            extract: Box::new(shell_x(
                "zstd -d -q -c {a} | tar -xf - -C {d}",
                quote(&tzst),
            )),
            archive: tzst,
        });
    }
    let rows = measure(&mut tools, args.runs, w)?;

    println!("{}", table(&rows, files, input));
    if !args.oar_only {
        println!("{}", verdict(&rows));
    }
    Ok(())
}

fn table(rows: &[Row], files: u64, input: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "input: {files} files, {:.1} MiB",
        input as f64 / 1048576.0
    );
    let _ = writeln!(
        out,
        "| {:<20} | {:>9} | {:>9} | {:>9} | {:>10} | {:>6} | {:>11} | {:>10} |",
        "tool",
        "create s",
        "extract s",
        "total s",
        "size MiB",
        "ratio",
        "oar cache ×",
        "cache size"
    );
    let _ = writeln!(
        out,
        "|{:-<22}|{:->11}|{:->11}|{:->11}|{:->12}|{:->8}|{:->13}|{:->12}|",
        "", "", "", "", "", "", "", ""
    );
    let cache = &rows[0];
    for r in rows {
        let _ = writeln!(
            out,
            "| {:<20} | {:>9.2} | {:>9.2} | {:>9.2} | {:>10.1} | {:>6.3} | {:>10.2}x | {:>10.3} |",
            r.name,
            r.create,
            r.extract,
            r.total(),
            r.size as f64 / 1048576.0,
            r.size as f64 / input as f64,
            r.total() / cache.total(),
            cache.size as f64 / r.size as f64,
        );
    }
    let _ = writeln!(
        out,
        "ratio = archive size / input size; oar cache × = this row's total time / the oar cache's \
         (above 1: the cache is faster); cache size = the cache's size / this row's size"
    );
    out
}

fn verdict(rows: &[Row]) -> String {
    let find = |n: &str| rows.iter().find(|r| r.name == n);
    let (Some(cache), Some(zip), Some(zstd)) = (
        find("oar cache (tar.zst)"),
        find("zip -r -6 + unzip"),
        find("tar | zstd -T0"),
    ) else {
        return String::new();
    };
    let speed = zip.total() / cache.total();
    let size_ok = cache.size <= zip.size;
    let vs_zstd = cache.total() / zstd.total();
    format!(
        "target 1: oar cache >= 3x faster than zip -r + unzip at no worse size than zip -6: {:.2}x, \
         size {:.3} of zip's -> {}\n\
         target 2: oar cache within 20% of tar | zstd -T0: {:.2} of its time -> {}",
        speed,
        cache.size as f64 / zip.size as f64,
        if speed >= 3.0 && size_ok {
            "MET"
        } else {
            "MISSED"
        },
        vs_zstd,
        if vs_zstd <= 1.2 { "MET" } else { "MISSED" },
    )
}
