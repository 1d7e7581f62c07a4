//! A reactor-ABI function in Rust (built with Debian's rustc and its wasm32-wasi standard
//! library, no crates): Isola writes the parameters as JSON into memory from `isola_alloc`,
//! calls `isola_handle(pointer, length)` and reads the JSON result it points to.
//!   build: rustc --target wasm32-wasi --crate-type cdylib -O -C strip=symbols -o fib.wasm fib.rs

/// The number value of a top-level field, without serde: enough for an example.
fn number_field(json: &str, field: &str) -> Option<u64> {
    let key = format!("\"{}\"", field);
    let rest = &json[json.find(&key)? + key.len()..];
    let rest = rest[rest.find(':')? + 1..].trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        let next = a.wrapping_add(b);
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
    let input = std::str::from_utf8(input).unwrap_or("{}");
    let n = number_field(input, "n").unwrap_or(10).min(93);
    eprintln!("computing fib({})", n);
    let output = format!("{{\"n\":{},\"fib\":{},\"language\":\"Rust\"}}", n, fib(n)).into_bytes();
    let result = ((output.as_ptr() as u64) << 32) | output.len() as u64;
    // The instance lives for one invocation: leaking the result is simpler than freeing it.
    std::mem::forget(output);
    result
}
