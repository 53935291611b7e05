//! The embedded CPython: starting and stopping it. Every raw call lives in [`ffi`].

pub mod ffi;

pub use ffi::{
    Gil, Host, InterpId, MainThread, Obj, PyErr, PyObj, PyResult, Recv, SubInterpreter, ThreadState,
};

use crate::venv::Home;

/// Starts the interpreter for a checked python-home; returns with the GIL released.
pub fn start(home: &Home) -> Result<MainThread, String> {
    let program = home.program_name();
    ffi::initialize(&ffi::InitOptions {
        program_name: &program,
        home: home.home(),
    })
    .map_err(|e| format!("the Python interpreter failed to start: {e}"))
}

/// The version of the linked libpython, as Python reports it (`sys.version`'s first word).
pub const BUILD_VERSION: &str = env!("WSGI_GATEWAY_PY_FULL_VERSION");
