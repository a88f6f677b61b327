//! Request and response bodies of `/p2pchat/sync/1` on arbitrary bytes, decoded as libp2p's
//! CBOR codec decodes them (`cbor4ii` serde), then checked as the node checks them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pchat_protocol::wire::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(Request::Hello(hello)) = cbor4ii::serde::from_slice::<Request>(data) {
        let _ = hello.check();
    }
    if let Ok(Response::Hello(hello)) = cbor4ii::serde::from_slice::<Response>(data) {
        let _ = hello.check();
    }
});
