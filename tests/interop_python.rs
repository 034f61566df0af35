//! Interop: a client nobody here wrote speaks `roomcast.v1.msgpack` to a real
//! broker. `tests/python/interop.py` drives it with Python's `websockets` and
//! `msgpack` (pinned in `tests/python/requirements.txt`, installed by
//! `./scripts/test.sh`) and checks subscribe, publish, ordered delivery,
//! unsubscribe, error 102 and close 1003 from the client's side.

mod common;

use common::broker::{rooms_on_both_cores, Broker};
use common::python::run_script;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_websockets_client_speaks_the_msgpack_protocol() {
    let broker = Broker::start();
    let (one, two) = rooms_on_both_cores("py-");
    let stdout = run_script(
        "interop.py",
        vec![broker.addr.to_string(), one, two],
        "interop: ok",
    )
    .await;
    print!("{stdout}");
    broker.shutdown().await;
}
