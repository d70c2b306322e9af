//! The proxy-wasm ABI's entry points (`proxy_abi_version_0_2_1`): the functions Envoy calls,
//! and the contexts they reach. A root context per plugin, an HTTP context per request,
//! found by the id Envoy gives; a callout's answer goes to the context that dispatched it,
//! by its token. Written here rather than taken from the SDK: its dispatcher and the
//! traits' default methods were 56 KB of the module and 17 MB of V8's compile memory
//! ("Round 6" in docs/performance.md), and it panics on an id or token it does not know,
//! where this ignores the call.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::mem::MaybeUninit;

use super::http::Filter;
use super::{abi, init_logging, RootCtx};
use crate::effect::{Input, Step};

/// Envoy's values for "go on" and "wait" (`Action`).
const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;

/// The live contexts of this VM.
#[derive(Default)]
struct Contexts {
    roots: HashMap<u32, RootCtx>,
    /// Each request's filter.
    http: HashMap<u32, Filter>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
    /// The context whose callback is running: a callout dispatched now answers to it.
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
    /// Callouts in flight: token → the context that dispatched it.
    static CALLOUTS: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
}

/// Records that the running context dispatched the callout `token`.
pub(super) fn dispatched(token: u32) {
    let owner = ACTIVE.with(Cell::get);
    CALLOUTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.insert(token, owner);
        }
    });
}

/// The context that dispatched `token`, which answers it (once).
fn answered(token: u32) -> Option<u32> {
    CALLOUTS.with(|c| c.try_borrow_mut().ok()?.remove(&token))
}

/// Runs `f` on the contexts, as `context_id`'s callback. Envoy never calls back into the VM
/// while a callback runs (it defers what would); should it, the call is dropped.
fn with<T>(context_id: u32, fallback: T, f: impl FnOnce(&mut Contexts) -> T) -> T {
    ACTIVE.with(|a| a.set(context_id));
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
    with(context_id, CONTINUE, |c| {
        match c.http.get_mut(&context_id) {
            Some(filter) => match filter.on(input) {
                Step::Continue => CONTINUE,
                Step::Pause => PAUSE,
            },
            None => CONTINUE,
        }
    })
}

/// A callout's answer, for the context that dispatched it, wherever it is.
fn on_answer(token: u32, input: Input) {
    let Some(owner) = answered(token) else {
        return;
    };
    // Host calls made now act on the owner (the SDK did the same).
    let _ = abi::set_effective_context(owner);
    with(owner, (), |c| {
        if let Some(filter) = c.http.get_mut(&owner) {
            filter.on(input);
        } else if let Some(root) = c.roots.get_mut(&owner) {
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
        if root_context_id == 0 {
            c.roots.insert(context_id, RootCtx::new());
        } else {
            // Without a configuration (or a root it knows) the filter still answers: it
            // fails closed, never lets a request by unfiltered.
            let plugin = c.roots.get(&root_context_id).and_then(RootCtx::plugin);
            c.http.insert(context_id, Filter::new(plugin));
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> u32 {
    with(context_id, 0, |c| {
        c.roots
            .get_mut(&context_id)
            .map_or(0, |r| u32::from(r.on_vm_start()))
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> u32 {
    with(context_id, 0, |c| {
        c.roots
            .get_mut(&context_id)
            .map_or(0, |r| u32::from(r.on_configure()))
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with(context_id, (), |c| {
        if let Some(root) = c.roots.get_mut(&context_id) {
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
    with(context_id, (), |c| {
        if c.http.remove(&context_id).is_none() {
            c.roots.remove(&context_id);
        }
    });
    // Callouts it had in flight will not answer (Envoy cancels them with their context).
    CALLOUTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.retain(|_, owner| *owner != context_id);
        }
    });
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
