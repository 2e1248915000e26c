//! `GET /api/v1/fleet`: this replica's view of its fleet: the store's health, the live replicas
//! with their addresses, config digests and generations, and who leads each rollout.

use http::StatusCode;

use super::api::json;
use super::Admin;
use crate::data::body::ResponseBody;
use crate::fleet::FleetView;

/// Answers `/api/v1/fleet`.
pub fn answer(admin: &Admin) -> http::Response<ResponseBody> {
    let view = match &admin.fleet {
        Some(fleet) => FleetView::of(fleet),
        None => FleetView::disabled(),
    };
    json(StatusCode::OK, &view)
}
