//! `/openapi.json`: the document in `assets/`, with this server's limits written in, so the
//! contract says exactly what this server accepts (text lengths, batch and candidate counts,
//! whether a key is required).

use serde_json::{json, Value};

use crate::AppState;

const TEMPLATE: &str = include_str!("../assets/openapi.json");

pub fn document(state: &AppState) -> Value {
    let c = &state.config;
    let mut doc: Value = serde_json::from_str(TEMPLATE).expect("the bundled OpenAPI document");
    let mut set = |pointer: &str, v: Value| match doc.pointer_mut(pointer) {
        Some(slot) => *slot = v,
        None => panic!("the OpenAPI template has no {pointer}"),
    };
    set(
        "/components/schemas/Text/maxLength",
        json!(c.max_text_chars),
    );
    for side in 0..2 {
        let at = format!("/components/schemas/CompatRerankRequest/oneOf/{side}/properties");
        set(
            &format!("{at}/documents/maxItems"),
            json!(c.max_rerank_documents),
        );
        set(
            &format!("{at}/top_n/maximum"),
            json!(c.max_rerank_documents),
        );
    }
    let batch =
        "/paths/~1predict~1batch/post/requestBody/content/application~1json/schema/maxItems";
    set(batch, json!(c.max_batch_items));
    for p in [
        "/components/schemas/InferInput/properties/data/maxItems",
        "/components/schemas/InferInput/properties/shape/items/maximum",
    ] {
        set(p, json!(c.max_batch_items));
    }
    let rerank = [
        "/components/schemas/RerankRequest/oneOf/0/properties/texts/maxItems",
        "/components/schemas/RerankRequest/oneOf/1/properties/images/maxItems",
        "/paths/~1rerank/post/requestBody/content/multipart~1form-data/schema/properties/texts/maxItems",
        "/paths/~1rerank/post/requestBody/content/multipart~1form-data/schema/properties/images/maxItems",
        "/components/schemas/RerankRequest/oneOf/0/properties/top_k/maximum",
        "/components/schemas/RerankRequest/oneOf/1/properties/top_k/maximum",
        "/paths/~1rerank/post/requestBody/content/multipart~1form-data/schema/properties/top_k/maximum",
    ];
    for p in rerank {
        set(p, json!(c.max_rerank_candidates));
    }
    if !c.access.keys.current().is_empty() || c.access.consumer_header.is_some() {
        // Keys required: the anonymous alternative (`{}`) is no longer one. A gateway's
        // consumer header stands in for a key, but only from trusted peers.
        for op in inference_operations(&mut doc) {
            if let Some(Value::Array(alternatives)) = op.get_mut("security") {
                alternatives.retain(|a| a.as_object().is_some_and(|o| !o.is_empty()));
            }
        }
    }
    doc
}

fn inference_operations(doc: &mut Value) -> Vec<&mut Value> {
    let Some(Value::Object(paths)) = doc.get_mut("paths") else {
        return Vec::new();
    };
    paths
        .values_mut()
        .filter_map(|p| p.get_mut("post"))
        .filter(|op| op.get("security").is_some())
        .collect()
}
