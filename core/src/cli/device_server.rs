//! `hvq device-server`: host this machine's devices for `hvq train --devices ws://HOST:PORT` on
//! another process or machine (see `hvq::device::remote`).

use anyhow::Result;
use clap::Args;

/// Options of `hvq device-server`.
#[derive(Args, Debug)]
pub struct DeviceServerArgs {
    /// The devices to host, as for `hvq train --devices`: cpu, wgpu, cuda, cuda:N, wgpu:N, comma
    /// separated. A client picks one with `ws://HOST:PORT#N` (N counts from 0; 0 when absent).
    /// All must belong to one backend: the CPU, or GPUs (CUDA and wgpu together).
    #[arg(long, default_value = "cpu")]
    pub devices: String,
    /// Where to listen, HOST:PORT. 127.0.0.1 keeps it to this machine; 0.0.0.0 opens it to the
    /// network (unencrypted: a trusted network only, with HVQ_REMOTE_TOKEN set on both sides).
    /// Port 0 picks a free port, printed at start.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: String,
}

/// Run `hvq device-server` until Ctrl+C or SIGTERM.
pub fn run(args: DeviceServerArgs) -> Result<()> {
    let devices = hvq::device::create_list(&args.devices)?;
    let count = devices.len();
    hvq::device::remote::serve(devices, &args.listen, |address| {
        let token = match hvq::device::remote::token_from_environment() {
            Some(_) => "clients must present HVQ_REMOTE_TOKEN",
            None => "no token asked (set HVQ_REMOTE_TOKEN on both sides to ask one)",
        };
        // stdout, one line, so a script (or a test) can read the address to dial.
        println!(
            "serving {count} device(s) ({}) on {address}; {token}",
            args.devices
        );
    })?;
    Ok(())
}
