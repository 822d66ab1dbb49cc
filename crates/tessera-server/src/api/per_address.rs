//! Requests in flight from one source address: at most
//! `limits.requests_in_flight_per_address_max`, so that one host cannot take
//! the whole capacity of the server. Servers of the pool, proven by their
//! credential, are not counted here: they have their own capacity.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tessera_proto::ErrorCode;

use super::auth::Caller;
use super::{api_error, ApiError};
use crate::App;

/// The address a connection comes from, whatever the listener.
#[derive(Clone, Copy, Debug)]
pub struct SourceAddress(pub SocketAddr);

/// Any listener whose connections have a socket address, so that
/// [`SourceAddress`] can be taken from its connections.
pub struct Addressed<L>(pub L);

impl<L: axum::serve::Listener<Addr = SocketAddr>> axum::serve::Listener for Addressed<L> {
    type Io = L::Io;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl std::future::Future<Output = (L::Io, SocketAddr)> + Send {
        self.0.accept()
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Addressed<L>>>
    for SourceAddress
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Addressed<L>>) -> SourceAddress {
        SourceAddress(*stream.remote_addr())
    }
}

/// Requests in flight, per source address.
#[derive(Default)]
pub(crate) struct InFlight {
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One request's place in [`InFlight`], given back when it is answered.
pub(super) struct Place<'a> {
    in_flight: &'a InFlight,
    address: IpAddr,
}

impl InFlight {
    fn enter(&self, address: IpAddr, max: usize) -> Option<Place<'_>> {
        let mut per_address = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_address.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Place {
            in_flight: self,
            address,
        })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut per_address = self
            .in_flight
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                per_address.remove(&self.address);
            }
        }
    }
}

pub(super) async fn limit(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let from_server = matches!(
        request.extensions().get::<Caller>(),
        Some(Caller::Server(_))
    );
    let address = request
        .extensions()
        .get::<ConnectInfo<SourceAddress>>()
        .map(|info| info.0 .0.ip());
    let (Some(address), false) = (address, from_server) else {
        return next.run(request).await;
    };
    let _place = match enter(&app, address) {
        Ok(place) => place,
        Err(err) => return err.into_response(),
    };
    next.run(request).await
}

/// A place for one request from `address`, or the refusal naming the limit.
pub(super) fn enter(app: &App, address: IpAddr) -> Result<Place<'_>, ApiError> {
    let max = app.limits.requests_in_flight_per_address_max;
    app.in_flight.enter(address, max).ok_or_else(|| {
        api_error(
            ErrorCode::TooManyRequests,
            format!(
                "{address} has {max} requests in flight, the most one address may have; retry \
                 shortly"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_places() {
        let in_flight = InFlight::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = in_flight.enter(a, 2).expect("first");
        let _second = in_flight.enter(a, 2).expect("second");
        assert!(in_flight.enter(a, 2).is_none());
        assert!(
            in_flight.enter(b, 2).is_some(),
            "other addresses are not held up"
        );
        drop(first);
        assert!(in_flight.enter(a, 2).is_some());
    }
}
