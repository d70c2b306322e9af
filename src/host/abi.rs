//! The raw proxy-wasm ABI calls the filter makes, each returning the host's status as a
//! value. (The SDK's `hostcalls` panic on any status they did not expect, `BadArgument` when
//! a header is touched in the wrong phase for instance, and a panic kills the VM; the filter
//! does not use the SDK at all, see `entry`.)

use std::fmt;
use std::ptr::{null, null_mut};

use crate::headers::Headers;
use crate::wire::serialize_map;

/// A host status other than Ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", crate::wire::status_name(self.0), self.0)
    }
}

const OK: u32 = 0;
use crate::wire::NOT_FOUND;

// Same imports as the SDK declares, with plain integer statuses so that an unexpected value
// is data, not undefined behaviour. One line each: this is a table of the ABI.
#[rustfmt::skip]
#[allow(clashing_extern_declarations, clippy::too_many_arguments)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_get_log_level(ret_level: *mut u32) -> u32;
    fn proxy_replace_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret_data: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(ret_time: *mut u64) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, ret_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_shared_data(key: *const u8, key_size: usize, ret_data: *mut *mut u8, ret_size: *mut usize, ret_cas: *mut u32) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(buffer: u32, start: usize, max_size: usize, ret_data: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(buffer: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_send_local_response(status: u32, details: *const u8, details_size: usize, body: *const u8, body_size: usize, headers: *const u8, headers_size: usize, grpc_status: i32) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, ret_data: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_http_call(upstream: *const u8, upstream_size: usize, headers: *const u8, headers_size: usize, body: *const u8, body_size: usize, trailers: *const u8, trailers_size: usize, timeout_ms: u32, ret_token: *mut u32) -> u32;
    fn proxy_grpc_call(upstream: *const u8, upstream_size: usize, service: *const u8, service_size: usize, method: *const u8, method_size: usize, metadata: *const u8, metadata_size: usize, message: *const u8, message_size: usize, timeout_ms: u32, ret_token: *mut u32) -> u32;
}

fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Takes ownership of memory the host allocated through the module's allocator.
fn take(status: u32, data: *mut u8, size: usize) -> Result<Option<Vec<u8>>, Status> {
    match status {
        OK if data.is_null() => Ok(None),
        // SAFETY: on Ok the host returns a buffer of `size` bytes that it allocated with this
        // module's `proxy_on_memory_allocate` (a `Vec<u8>` with capacity `size`), and hands
        // its ownership to us.
        OK => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length describe a live string.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// Lets the paused request go on.
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: a plain value (0: the request stream).
    check(unsafe { proxy_continue_stream(0) })
}

pub fn log_level() -> Result<u32, Status> {
    let mut level = 0u32;
    // SAFETY: the host writes one u32 to a live local.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(level)
}

pub fn set_header(map: u32, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live strings.
    check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn remove_header(map: u32, name: &str) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live string.
    check(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// Every header of a map, in order.
pub fn headers(map: u32) -> Result<Headers, Status> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the host writes to live locals.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    Ok(take(status, data, size)?
        .map(Headers::from_wire)
        .unwrap_or_default())
}

/// Replaces a whole header map (one call for many edits).
pub fn set_headers(map: u32, headers: &Headers) -> Result<(), Status> {
    let bytes = headers.wire();
    // SAFETY: pointer and length describe a live buffer.
    check(unsafe { proxy_set_header_map_pairs(map, bytes.as_ptr(), bytes.len()) })
}

/// A shared-data value and its CAS token; `(None, None)` when the key does not exist.
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    let mut data = null_mut();
    let mut size = 0;
    let mut cas = 0u32;
    // SAFETY: pointers describe a live string and live locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        NOT_FOUND => Ok((None, None)),
        _ => {
            let value = take(status, data, size)?;
            Ok((Some(value.unwrap_or_default()), Some(cas)))
        }
    }
}

/// Writes a shared-data value if `cas` still matches (`None`: unconditionally).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live buffers.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

pub fn set_tick_period_ms(ms: u32) -> Result<(), Status> {
    // SAFETY: a plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: pointer and length describe a live string; the host writes one u32.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: u64) -> Result<(), Status> {
    // Envoy refuses increments <= 0.
    if by == 0 {
        return Ok(());
    }
    // SAFETY: plain values.
    check(unsafe { proxy_increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain values.
    check(unsafe { proxy_record_metric(id, value) })
}

/// The host's wall clock, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    let mut t = 0u64;
    // SAFETY: the host writes one u64 to a live local.
    match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
        OK => t,
        _ => 0,
    }
}

/// A buffer's first `size` bytes; empty when there are none or they cannot be read.
pub fn bytes(buffer: u32, size: usize) -> Vec<u8> {
    self::buffer(buffer, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn buffer(buffer: u32, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the host writes to live locals.
    let status = unsafe { proxy_get_buffer_bytes(buffer, start, max_size, &mut data, &mut size) };
    take(status, data, size)
}

pub fn set_buffer(buffer: u32, start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live slice.
    check(unsafe { proxy_set_buffer_bytes(buffer, start, size, value.as_ptr(), value.len()) })
}

pub fn send_response(status: u32, headers: &[(String, String)], body: &[u8]) -> Result<(), Status> {
    let map = serialize_map(headers);
    // SAFETY: pointers and lengths describe live buffers; no status details are sent.
    check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = path.join("\0");
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: pointers describe a live string and live locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    take(status, data, size)
}

pub fn set_property(name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live buffers.
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// Makes the host's calls act on this context (a callout's answer is delivered to the
/// context that dispatched it).
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: a plain value.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Sends an HTTP request to a cluster; its token comes back with the answer.
pub fn http_call(
    cluster: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, Status> {
    let map = serialize_map(headers);
    let trailers = serialize_map::<&str, &str>(&[]);
    let body = body.unwrap_or_default();
    let mut token = 0u32;
    // SAFETY: pointers and lengths describe live buffers; the host writes one u32.
    check(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            map.as_ptr(),
            map.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Sends a unary gRPC request to a cluster; its token comes back with the answer.
pub fn grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: &[(String, String)],
    message: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, Status> {
    let map = serialize_map(metadata);
    let message = message.unwrap_or_default();
    let mut token = 0u32;
    // SAFETY: pointers and lengths describe live buffers; the host writes one u32.
    check(unsafe {
        proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            map.as_ptr(),
            map.len(),
            message.as_ptr(),
            message.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}
