//! The proxy-wasm ABI's entry points (`proxy_abi_version_0_2_1`): the functions Envoy calls,
//! each handed to the context it names (`contexts`: a root per plugin, a filter per
//! request; a callout's answer to the context that dispatched it, by its token). Written
//! here rather than taken from the SDK: its dispatcher and the traits' default methods were
//! 56 KB of the module and 17 MB of V8's compile memory ("Round 6" in docs/performance.md),
//! and it panics on an id or token it does not know, where this ignores the call.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::http::Filter;
use super::{abi, init_logging, RootCtx};
use crate::contexts::{Callouts, Contexts};
use crate::effect::{Input, Step};

/// Envoy's values for "go on" and "wait" (`Action`).
const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;

thread_local! {
    static CONTEXTS: RefCell<Contexts<RootCtx, Filter>> = RefCell::new(Contexts::default());
    /// Apart from the contexts: a callout goes out while a context's callback runs.
    static CALLOUTS: RefCell<Callouts> = RefCell::new(Callouts::default());
}

/// Records that the running context dispatched the callout `token`.
pub(super) fn dispatched(token: u32) {
    callouts(|c| c.dispatched(token));
}

fn callouts<T>(f: impl FnOnce(&mut Callouts) -> T) -> Option<T> {
    CALLOUTS.with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
}

/// Runs `f` on the contexts, as `context_id`'s callback. Envoy never calls back into the VM
/// while a callback runs (it defers what would); should it, the call is dropped.
fn with<T>(context_id: u32, fallback: T, f: impl FnOnce(&mut Contexts<RootCtx, Filter>) -> T) -> T {
    callouts(|c| c.running(context_id));
    CONTEXTS.with(|c| match c.try_borrow_mut() {
        Ok(mut contexts) => f(&mut contexts),
        Err(_) => {
            abi::log(
                4,
                "envoy-ai-proxy: a callback came in while another ran; ignored",
            );
            fallback
        }
    })
}

/// One of a request's callbacks: the action Envoy gets back (go on when the id is unknown).
fn on_request(context_id: u32, input: Input) -> u32 {
    with(context_id, CONTINUE, |c| match c.request(context_id) {
        Some(filter) => match filter.on(input) {
            Step::Continue => CONTINUE,
            Step::Pause => PAUSE,
        },
        None => CONTINUE,
    })
}

/// A callout's answer, for the context that dispatched it, wherever it is.
fn on_answer(token: u32, input: Input) {
    let Some(owner) = callouts(|c| c.answered(token)).flatten() else {
        return;
    };
    // Host calls made now act on the owner (the SDK did the same).
    let _ = abi::set_effective_context(owner);
    with(owner, (), |c| {
        if let Some(filter) = c.request(owner) {
            filter.on(input);
        } else if let Some(root) = c.root(owner) {
            root.on(input);
        }
    });
}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: the module's static constructors, run once before any other call, as a WASI
    // reactor's `_initialize` must.
    #[cfg(target_os = "wasi")]
    unsafe {
        __wasm_call_ctors()
    };
    init_logging();
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory the host fills and hands over (`abi::take` takes it back as a `Vec<u8>` of
/// exactly `size`).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(Box::<[MaybeUninit<u8>]>::new_uninit_slice(size)).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    with(context_id, (), |c| {
        // Without a configuration (or a root it knows) the filter still answers: it fails
        // closed, never lets a request by unfiltered.
        c.create(context_id, root_context_id, RootCtx::new, |root| {
            Filter::new(root.and_then(RootCtx::plugin))
        });
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> u32 {
    with(context_id, 0, |c| {
        c.root(context_id).map_or(0, |r| u32::from(r.on_vm_start()))
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> u32 {
    with(context_id, 0, |c| {
        c.root(context_id)
            .map_or(0, |r| u32::from(r.on_configure()))
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with(context_id, (), |c| {
        if let Some(root) = c.root(context_id) {
            root.on_tick();
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, eos: u32) -> u32 {
    on_request(
        context_id,
        Input::RequestHeaders {
            end_of_stream: eos != 0,
        },
    )
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, size: usize, eos: u32) -> u32 {
    on_request(
        context_id,
        Input::RequestBody {
            size,
            end_of_stream: eos != 0,
        },
    )
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, _trailers: usize) -> u32 {
    on_request(context_id, Input::RequestTrailers)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, eos: u32) -> u32 {
    on_request(
        context_id,
        Input::ResponseHeaders {
            end_of_stream: eos != 0,
        },
    )
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, eos: u32) -> u32 {
    on_request(
        context_id,
        Input::ResponseBody {
            size,
            end_of_stream: eos != 0,
        },
    )
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context_id: u32, _trailers: usize) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    on_request(context_id, Input::Log);
}

/// Every context is done when Envoy says so (nothing is left to finish).
#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(context_id, (), |c| c.delete(context_id));
    callouts(|c| c.forget(context_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    _context_id: u32,
    token: u32,
    _headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    on_answer(token, Input::CalloutAnswer { token, body_size });
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_context_id: u32, token: u32, size: usize) {
    on_answer(
        token,
        Input::GrpcAnswer {
            token,
            status: 0,
            size,
        },
    );
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_context_id: u32, token: u32, status: u32) {
    on_answer(
        token,
        Input::GrpcAnswer {
            token,
            status,
            size: 0,
        },
    );
}
