//! A reactor-ABI function in Rust (built with Debian's rustc and its wasm32-wasi standard
//! library, no crates): Isola writes the parameters as JSON into memory from `isola_alloc`,
//! calls `isola_handle(pointer, length)` and reads the JSON result it points to.
//!   build: rustc --target wasm32-wasi --crate-type cdylib -O -C strip=symbols -o fib.wasm fib.rs
//!
//! `{"n": 90}` gives `{"n":90,"fib":"2880067194370816120","language":"Rust"}`: the number is a
//! string because JSON numbers are doubles to most readers, exact only up to 2^53 (fib(78)).
//! Any other `n` than an integer from 0 to MAX_N is refused with an error result.

/// fib(186) is the largest that fits in 128 bits.
const MAX_N: u32 = 186;

/// The raw JSON text of a top-level field's value, without serde: a small scanner that skips
/// strings (escapes included) and nested values, so a key inside them is never mistaken for one.
fn top_level_field<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let bytes = json.as_bytes();
    let mut i = skip_space(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_space(bytes, i);
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(bytes, i)?;
        let key = &json[i + 1..key_end - 1];
        i = skip_space(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_space(bytes, i + 1);
        let value_end = skip_value(bytes, value_start)?;
        if key == field {
            return Some(&json[value_start..value_end]);
        }
        i = skip_space(bytes, value_end);
        match bytes.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index just after the string that starts at `i`.
fn skip_string(bytes: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just after the value that starts at `i`.
fn skip_value(bytes: &[u8], mut i: usize) -> Option<usize> {
    match bytes.get(i)? {
        b'"' => skip_string(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = skip_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            while i < bytes.len() && !matches!(bytes[i], b',' | b'}' | b']') && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            Some(i)
        }
    }
}

/// `n` as given, or why it cannot be used.
fn parse_n(input: &str) -> Result<u32, String> {
    let raw = match top_level_field(input, "n") {
        Some(raw) => raw,
        None => return Err(format!("fib needs the parameter n, an integer from 0 to {}.", MAX_N)),
    };
    let valid = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u32>() {
        Ok(n) if valid && n <= MAX_N => Ok(n),
        _ => Err(format!(
            "n must be an integer from 0 to {} (fib({}) is the largest that fits in 128 bits); got {}.",
            MAX_N,
            MAX_N,
            raw.chars().take(40).collect::<String>()
        )),
    }
}

/// Text made safe to put inside a JSON string.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn fib(n: u32) -> u128 {
    let (mut a, mut b) = (0u128, 1u128);
    for _ in 0..n {
        let next = a + b;
        a = b;
        b = next;
    }
    a
}

#[no_mangle]
pub extern "C" fn isola_alloc(size: usize) -> *mut u8 {
    let mut buffer = Vec::<u8>::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

#[no_mangle]
pub extern "C" fn isola_handle(pointer: *const u8, length: usize) -> u64 {
    let input = unsafe { std::slice::from_raw_parts(pointer, length) };
    let output = match std::str::from_utf8(input).map_err(|_| "The parameters are not UTF-8.".to_string()).and_then(parse_n) {
        Ok(n) => {
            eprintln!("computing fib({})", n);
            format!("{{\"n\":{},\"fib\":\"{}\",\"language\":\"Rust\"}}", n, fib(n))
        }
        Err(message) => format!("{{\"error\":\"{}\"}}", escape(&message)),
    };
    let output = output.into_bytes();
    let result = ((output.as_ptr() as u64) << 32) | output.len() as u64;
    // The instance lives for one invocation: leaking the result is simpler than freeing it.
    std::mem::forget(output);
    result
}
