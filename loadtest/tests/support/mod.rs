//! What the tests share: a responder (or `uas`) child process killed on drop, a run of
//! `sipshard-load` writing a JSON summary, a minimal XML well-formedness check for the SVGs, and
//! (`stream`) a TCP/TLS responder with test certificates.

#![allow(dead_code)] // Each test file uses its own part of this module.

pub mod schema;
pub mod stream;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const LOAD: &str = env!("CARGO_BIN_EXE_sipshard-load");

/// Kills the server even when an assertion fails.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sipshard-load MODE --listen 127.0.0.1:0 ARGS` and reads the address it bound.
pub fn server(mode: &str, args: &[&str]) -> Server {
    let mut child = Command::new(LOAD)
        .args([mode, "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("listening on udp ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Server { child, addr }
}

pub fn out_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sipshard-load-test-{}-{name}", std::process::id()))
}

/// Runs `sipshard-load ARGS --json PATH`; returns (exit code, stdout, the JSON summary's path).
pub fn load(name: &str, args: &[&str]) -> (Option<i32>, String, PathBuf) {
    let json = out_path(&format!("{name}.json"));
    let out = Command::new(LOAD)
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run sipshard-load");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        json.exists(),
        "no JSON summary\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), stdout, json)
}

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read JSON")).expect("JSON")
}

/// Checks that `text` is well-formed XML (an optional declaration, one root element, balanced
/// tags, quoted attributes without `<`, only the five predefined entities and numeric
/// references) and returns the element names in document order.
pub fn well_formed(text: &str) -> Result<Vec<String>, String> {
    fn check_text(t: &str) -> Result<(), String> {
        let mut rest = t;
        while let Some(i) = rest.find('&') {
            let end = rest[i..]
                .find(';')
                .ok_or(format!("unterminated entity in {t:?}"))?;
            let name = &rest[i + 1..i + end];
            let numeric = name.strip_prefix('#').is_some_and(|n| {
                n.strip_prefix('x').map_or_else(
                    || n.parse::<u32>().is_ok(),
                    |h| u32::from_str_radix(h, 16).is_ok(),
                )
            });
            if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&name) {
                return Err(format!("unknown entity &{name};"));
            }
            rest = &rest[i + end + 1..];
        }
        Ok(())
    }
    let mut rest = text.trim_start();
    if let Some(decl) = rest.strip_prefix("<?xml") {
        rest = &decl[decl.find("?>").ok_or("unterminated declaration")? + 2..];
    }
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut roots = 0;
    loop {
        let Some(open) = rest.find('<') else {
            check_text(rest)?;
            if !rest.trim().is_empty() && stack.is_empty() {
                return Err("text after the root element".into());
            }
            break;
        };
        let between = &rest[..open];
        check_text(between)?;
        if stack.is_empty() && !between.trim().is_empty() {
            return Err(format!("text outside the root: {between:?}"));
        }
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name.trim() => {}
                top => return Err(format!("</{name}> closes {top:?}")),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let name = &tag[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || ":-_.".contains(c))
        {
            return Err(format!("bad element name {name:?}"));
        }
        // Attributes: name="value" pairs, each name once.
        let mut attrs = tag[name_end..].trim();
        let mut seen = Vec::new();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or(format!("attribute without value in <{tag}>"))?;
            let attr = attrs[..eq].trim();
            if attr.is_empty() || seen.contains(&attr) {
                return Err(format!("bad or repeated attribute {attr:?} in <{name}>"));
            }
            seen.push(attr);
            let after = attrs[eq + 1..].trim_start();
            let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
            let quote = quote.ok_or(format!("unquoted attribute {attr} in <{name}>"))?;
            let end = after[1..].find(quote).ok_or("unterminated attribute")? + 1;
            let value = &after[1..end];
            if value.contains('<') {
                return Err(format!("< in attribute {attr}"));
            }
            check_text(value)?;
            attrs = after[end + 1..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        names.push(name.to_owned());
        if !self_closing {
            stack.push(name.to_owned());
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(names)
}

/// Stops a server and returns what it wrote to stderr.
pub fn stop(mut server: Server) -> String {
    use std::io::Read as _;
    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut text = String::new();
    if let Some(mut stderr) = server.child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}
