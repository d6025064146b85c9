//! Devices on other processes or machines: `hvq device-server` hosts this machine's devices, and
//! `--devices ws://HOST:PORT` reaches them, through burn's remote backend (burn-remote). The
//! autodiff graph stays with the client; every tensor operation runs on the server, and tensors
//! move between servers without passing through the client.
//!
//! WebSocket carries no encryption: a token (`HVQ_REMOTE_TOKEN`, the same on both sides) keeps
//! stray clients out on a trusted network, not someone reading the traffic.

use burn::tensor::Device;

use crate::error::{HvqError, Result};

/// The environment variable that holds the token a server asks for and a client presents.
pub const TOKEN_VARIABLE: &str = "HVQ_REMOTE_TOKEN";

/// The token from the environment, if one is set and not empty.
pub fn token_from_environment() -> Option<String> {
    std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty())
}

/// Split `ws://HOST:PORT#N` into the server's address and the device index (0 when absent).
pub fn parse_address(spec: &str) -> Result<(String, usize)> {
    let (url, index) = match spec.split_once('#') {
        Some((url, index)) => {
            let index = index.parse().map_err(|_| {
                HvqError::Device(format!(
                    "{spec:?} in --devices: the device index {index:?} is not a number"
                ))
            })?;
            (url, index)
        }
        None => (spec, 0),
    };
    let host = url.strip_prefix("ws://").unwrap_or(url);
    if host.is_empty() || host.contains('/') || !host.contains(':') {
        return Err(HvqError::Device(format!(
            "{spec:?} in --devices: a remote device is ws://HOST:PORT (optionally #N for the \
             server's N-th device)"
        )));
    }
    Ok((url.to_string(), index))
}

/// Connect the device `spec` names on a running `hvq device-server`, and probe it.
#[cfg(feature = "remote")]
pub fn connect(spec: &str) -> Result<Device> {
    use burn::remote::RemoteHost;

    let (url, index) = parse_address(spec)?;
    let mut host = RemoteHost::websocket(&url);
    if let Some(token) = token_from_environment() {
        host = host.with_credential(token);
    }
    let device = Device::remote_options(&host)
        .device_index(index)
        .init()
        .map_err(|e| {
            HvqError::Device(format!(
                "{spec}: cannot connect to the device server ({e}); check that `hvq device-server` \
                 runs there and that {TOKEN_VARIABLE} is the same on both sides"
            ))
        })?;
    super::probe(&device).map_err(|e| {
        HvqError::Device(format!(
            "{spec}: {e} (is {TOKEN_VARIABLE} the same on both sides?)"
        ))
    })?;
    Ok(device)
}

/// Without the `remote` feature: the address is checked, then refused with how to rebuild.
#[cfg(not(feature = "remote"))]
pub fn connect(spec: &str) -> Result<Device> {
    parse_address(spec)?;
    Err(HvqError::Device(format!(
        "{spec}: this build of hvq has no remote devices (build with `--features remote`)"
    )))
}

/// Host `devices` for remote clients on `listen` (`HOST:PORT`; port 0 picks a free one), until
/// the process receives Ctrl+C or SIGTERM. `on_listening` gets the address clients dial, once the
/// socket is bound (before any client can be refused). A token in [`TOKEN_VARIABLE`] is
/// required of every client.
#[cfg(feature = "remote")]
pub fn serve(devices: Vec<Device>, listen: &str, on_listening: impl FnOnce(&str)) -> Result<()> {
    use burn::server::{RemoteServer, TokenAuthorizer, WebSocketTransport};

    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| HvqError::Device(format!("device server: cannot listen on {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| HvqError::Device(format!("device server: {listen}: {e}")))?;
    let mut server = RemoteServer::new(devices);
    if let Some(token) = token_from_environment() {
        let authorizer = TokenAuthorizer::new(token)
            .map_err(|e| HvqError::Device(format!("device server: {TOKEN_VARIABLE}: {e}")))?;
        server = server.with_authorizer(authorizer);
    }
    on_listening(&format!("ws://{address}"));
    server
        .serve(WebSocketTransport::from_listener(listener))
        .map_err(|e| HvqError::Device(format!("device server on {address}: {e}")))
}

/// Without the `remote` feature: refused with how to rebuild.
#[cfg(not(feature = "remote"))]
pub fn serve(_devices: Vec<Device>, _listen: &str, _on_listening: impl FnOnce(&str)) -> Result<()> {
    Err(HvqError::Device(
        "this build of hvq cannot serve devices (build with `--features remote`)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_an_optional_device_index() {
        assert_eq!(
            parse_address("ws://10.0.0.2:3000").unwrap(),
            ("ws://10.0.0.2:3000".to_string(), 0)
        );
        assert_eq!(
            parse_address("ws://gpu-node:3000#3").unwrap(),
            ("ws://gpu-node:3000".to_string(), 3)
        );
        for bad in ["ws://", "ws://host", "ws://host:1/x", "ws://host:1#-1"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }
}
