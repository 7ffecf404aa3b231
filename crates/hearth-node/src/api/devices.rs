//! `hearth.v1.Devices`: registering, listing and re-fencing devices.

use hearth_core::intent::check_id;
use hearth_proto::v1 as pb;
use hearth_proto::v1::devices_client::DevicesClient;
use tonic::{Request, Response, Status};

use super::convert::{device_from_pb, device_to_pb, record_view};
use super::{Api, Call, to_status};

#[tonic::async_trait]
impl pb::devices_server::Devices for Api {
    async fn register(
        &self,
        req: Request<pb::DeviceManifest>,
    ) -> Result<Response<pb::DeviceManifest>, Status> {
        let call = Call::new(req);
        let res = match device_from_pb(&call.msg) {
            Ok(d) => self
                .node
                .register_device(d.clone(), call.caller.as_ref())
                .await
                .map(|_| device_to_pb(&d)),
            Err(e) => Err(e.into()),
        };
        self.answer(call, res, |ch, r| async move {
            DevicesClient::new(ch).register(r).await
        })
        .await
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let call = Call::new(req);
        let res = self
            .node
            .remove_device(&call.msg.id, call.caller.as_ref())
            .await
            .map(|(index, by, cancelled)| pb::RemoveDeviceResponse {
                id: call.msg.id.clone(),
                index,
                by,
                cancelled_intents: cancelled,
            });
        self.answer(call, res, |ch, r| async move {
            DevicesClient::new(ch).remove(r).await
        })
        .await
    }

    async fn list(
        &self,
        _req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let devices = self.node.devices().map_err(to_status)?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices.iter().map(device_to_pb).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::DeviceManifest>, Status> {
        let id = req.into_inner().id;
        check_id("id", &id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let devices = self.node.devices().map_err(to_status)?;
        devices
            .iter()
            .find(|d| d.id == id)
            .map(|d| Response::new(device_to_pb(d)))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no device {id:?}; `hearth device list` shows the registered ones"
                ))
            })
    }

    async fn refence(
        &self,
        req: Request<pb::RefenceRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let call = Call::new(req);
        let m = &call.msg;
        let res = self
            .node
            .refence(m.devices.clone(), m.all, &m.reason, call.caller.as_ref())
            .await
            .map(|r| record_view(&r));
        self.answer(call, res, |ch, r| async move {
            DevicesClient::new(ch).refence(r).await
        })
        .await
    }
}
