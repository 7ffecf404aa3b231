//! `hearth.v1.Audit`: the chain as a client reads it (tail, export, verify) and checkpoints.

use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_server::Audit;
use tonic::{Request, Response, Status};

use super::{Api, to_status};
use crate::node::describe;

type ExportStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Audit for Api {
    async fn tail(
        &self,
        req: Request<pb::TailRequest>,
    ) -> Result<Response<pb::TailResponse>, Status> {
        let count = match req.into_inner().count {
            0 => 20,
            n => n.min(10_000),
        };
        let links = self.node.tail(u64::from(count)).map_err(to_status)?;
        Ok(Response::new(pb::TailResponse {
            entries: links
                .into_iter()
                .map(|l| pb::AuditEntry {
                    index: l.record.index,
                    term: l.record.term,
                    leader: l.record.leader,
                    kind: describe(&l.record),
                    payload: l.record.payload,
                    hash: hex::encode(l.hash),
                })
                .collect(),
        }))
    }

    async fn refusals(
        &self,
        req: Request<pb::RefusalsRequest>,
    ) -> Result<Response<pb::RefusalsResponse>, Status> {
        Ok(Response::new(crate::refusals::serve(
            &self.refusals,
            req.get_ref(),
        )))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        _req: Request<pb::ExportRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let lines = self.node.export_lines().map_err(to_status)?;
        let chunks: Vec<Result<pb::ExportChunk, Status>> = lines
            .chunks(512)
            .map(|c| Ok(pb::ExportChunk { lines: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn verify(
        &self,
        _req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = self.node.verify().map_err(to_status)?;
        Ok(Response::new(pb::VerifyResponse {
            ok: r.failure.is_none(),
            checked: r.checked,
            first_bad_index: r.failure.as_ref().map(|f| f.index()),
            reason: r.failure.map(|f| f.to_string()).unwrap_or_default(),
            head_index: r.head.map(|(i, _)| i),
            head_hash: r.head.map(|(_, h)| hex::encode(h)).unwrap_or_default(),
            anchor_index: r.anchor.map(|(i, _)| i),
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        let m = self.node.checkpoint_now().await.map_err(to_status)?;
        let fork = matches!(&m.witness,
            crate::checkpoint::WitnessOutcome::Refused { refusal, .. } if refusal.is_fork());
        Ok(Response::new(pb::CheckpointResponse {
            index: m.checkpoint.index,
            head: hex::encode(m.checkpoint.head),
            fresh: m.fresh,
            cosigned: m.checkpoint.witness.is_some(),
            witness: m.witness.to_string(),
            line: m.checkpoint.to_line(),
            fork,
        }))
    }

    type ExportCheckpointsStream = ExportStream;

    async fn export_checkpoints(
        &self,
        _req: Request<pb::ExportCheckpointsRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let text = self.node.checkpoints.export_text().map_err(to_status)?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let chunks: Vec<Result<pb::ExportChunk, Status>> = lines
            .chunks(512)
            .map(|c| Ok(pb::ExportChunk { lines: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}
