//! Running the gateway the way the README says: nginx-examples/nginx.conf run as it is with
//! `nginx -c`. It uses the examples' fixed addresses (the `frontends` test group).

mod support;

use support::frontends::*;
use support::*;

fn have_nginx() -> bool {
    require(find_bin("nginx").is_some(), "nginx")
}

#[test]
fn nginx_complete_example_config_runs_as_it_is() {
    if !have_nginx() {
        return;
    }
    let serial = serial_guard();
    assert_port_free(GATEWAY_TCP);
    let gw = Gateway::start(&["--fastcgi", GATEWAY_TCP]);
    let front = Frontend::nginx_complete("nginx-examples/nginx.conf");
    let rig = Rig::from_parts(gw, front, serial);
    let r = rig.ok("GET", "/hello/there?x=1", &[], b"");
    let text = r.text();
    assert!(text.contains("wsgi-gateway diagnostics"), "{text}");
    assert!(
        text.contains("SCRIPT_NAME='' PATH_INFO='/hello/there'"),
        "{text}"
    );
    // /etc/nginx/fastcgi_params was included: nginx sent its params.
    assert!(text.contains("REQUEST_URI"), "{text}");
    rig.assert_gateway_quiet();
}
