//! File tests, after cranelift's filetests: each `tests/filetests/*.vir` is IR text in and the
//! expected optimized text out, so a rule's effect is read (and reviewed) as a diff of text.
//!
//! Re-bless every expected block with `VL3C_BLESS=1 cargo test -p vl3c-passes --test filetests`,
//! then review the diff of the .vir files: blessing records what the rules do, not what they
//! should do.
//!
//! File format:
//! ```text
//! ; rules: softmax            <- names for `rules::named`, or `all`
//! ; (free comments)
//! graph t { ... }             <- the input graph
//! ; expected:
//! ; graph t {                 <- the optimized graph, each line prefixed with `; `, so that the
//! ;   ...                        whole file still parses as the input graph
//! ; }
//! ```
//! Every file is optimized under the CPU cost model with the default budget.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use vl3c_ir::Graph;
use vl3c_passes::{cost::Target, optimize_with, rules, Budget};

const BLESS_VAR: &str = "VL3C_BLESS";
const EXPECTED: &str = "; expected:";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")
}

/// The `.vir` files, sorted so that failures and blessing are reported in a stable order.
fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir())
        .expect("tests/filetests exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vir"))
        .collect();
    files.sort();
    files
}

struct FileTest {
    /// `None`: `; rules: all`.
    rules: Option<Vec<String>>,
    /// Everything before `; expected:` (header, comments and the input graph), verbatim.
    input: String,
    /// The expected lines with their `; ` prefix removed; `None` when the file has no block yet.
    expected: Option<Vec<String>>,
}

fn parse_file(path: &Path, text: &str) -> FileTest {
    let name = path.display();
    let header = text.lines().next().unwrap_or_default();
    let names = header
        .strip_prefix("; rules:")
        .unwrap_or_else(|| panic!("{name}: the first line must be `; rules: ...`"));
    let names: Vec<String> = names.split_whitespace().map(str::to_string).collect();
    assert!(!names.is_empty(), "{name}: `; rules:` names no rule");
    let rules = if names == ["all"] { None } else { Some(names) };
    let lines: Vec<&str> = text.lines().collect();
    let (input, expected) = match lines.iter().position(|l| l.trim_end() == EXPECTED) {
        Some(i) => {
            let block = lines[i + 1..]
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let rest = l
                        .strip_prefix(';')
                        .unwrap_or_else(|| panic!("{name}: expected line without `;`: {l:?}"));
                    rest.strip_prefix(' ').unwrap_or(rest).to_string()
                })
                .collect();
            (
                lines[..i].iter().map(|l| format!("{l}\n")).collect(),
                Some(block),
            )
        }
        None => (text.to_string(), None),
    };
    FileTest {
        rules,
        input,
        expected,
    }
}

fn run(path: &Path, t: &FileTest) -> Vec<String> {
    let g = Graph::parse(&t.input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rules = match &t.rules {
        None => rules::all(),
        Some(names) => rules::named(&names.iter().map(String::as_str).collect::<Vec<_>>()),
    };
    let (opt, _) = optimize_with(&g, &Target::CPU, &Budget::default(), rules)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    opt.to_string().lines().map(str::to_string).collect()
}

/// A line diff: the common prefix and suffix are skipped, the middle shown as `-`/`+` lines.
fn diff(want: &[String], got: &[String]) -> String {
    let pre = want.iter().zip(got).take_while(|(a, b)| a == b).count();
    let suf = want[pre..]
        .iter()
        .rev()
        .zip(got[pre..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = format!("@@ line {} @@\n", pre + 1);
    for l in &want[pre.saturating_sub(2)..pre] {
        out += &format!("  {l}\n");
    }
    for l in &want[pre..want.len() - suf] {
        out += &format!("- {l}\n");
    }
    for l in &got[pre..got.len() - suf] {
        out += &format!("+ {l}\n");
    }
    for l in want[want.len() - suf..].iter().take(2) {
        out += &format!("  {l}\n");
    }
    out
}

#[test]
fn filetests() {
    let bless = std::env::var_os(BLESS_VAR).is_some_and(|v| v != "0" && !v.is_empty());
    let files = files();
    assert!(!files.is_empty(), "no .vir files in {}", dir().display());
    let mut failures = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        let t = parse_file(path, &text);
        let got = run(path, &t);
        if t.expected.as_ref() == Some(&got) {
            continue;
        }
        if bless {
            let block: String = got.iter().map(|l| format!("; {l}\n")).collect();
            let sep = if t.input.ends_with('\n') { "" } else { "\n" };
            fs::write(path, format!("{}{sep}{EXPECTED}\n{block}", t.input)).unwrap();
            eprintln!("blessed {}", path.display());
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy();
        match &t.expected {
            None => failures.push(format!(
                "--- {name}: no `{EXPECTED}` block; got:\n{}",
                got.join("\n")
            )),
            Some(want) => failures.push(format!(
                "--- {name} (expected)\n+++ {name} (got)\n{}",
                diff(want, &got)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} filetests failed (re-bless with {BLESS_VAR}=1 and review the diff):\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Every rule has a filetest: a new rule without one fails here.
#[test]
fn every_rule_has_a_filetest() {
    let mut covered = BTreeSet::new();
    for path in files() {
        let text = fs::read_to_string(&path).unwrap();
        if let Some(names) = parse_file(&path, &text).rules {
            covered.extend(names);
        }
    }
    let missing: Vec<String> = rules::all()
        .into_iter()
        .map(|r| r.name.to_string())
        .filter(|n| !covered.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "rules named in no `; rules:` header of tests/filetests/*.vir: {missing:?}"
    );
}
