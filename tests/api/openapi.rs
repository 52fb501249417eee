//! The OpenAPI document: served at `/api/openapi.json`, and describing every `/api/...` route
//! the router registers (the router and this test read the same table, `api_routes()`), so a
//! route added without its documentation fails here.
use serde_json::Value;

use crate::helpers::spawn_app;

/// `/api/v1/x/{*path}` is `/api/v1/x/{path}` in OpenAPI, which has no wildcard.
fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

#[tokio::test]
async fn every_api_route_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let response = reqwest::get(app.url("/api/openapi.json"))
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.expect("a JSON document");
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );
    let routes = companion::http::api_routes();
    assert!(routes.len() >= 20, "{} routes", routes.len());
    let mut missing = Vec::new();
    for route in &routes {
        assert!(route.path.starts_with("/api/"), "{}", route.path);
        let path = openapi_path(route.path);
        let method = route.method.as_str().to_lowercase();
        if document["paths"][&path][&method].is_null() {
            missing.push(format!("{} {}", route.method, route.path));
        }
    }
    assert!(
        missing.is_empty(),
        "not in the OpenAPI document: {missing:?}"
    );
    // And nothing is documented that the router does not serve.
    let documented: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            ["get", "put", "post", "delete", "patch"]
                .iter()
                .filter(|m| !item[**m].is_null())
                .count()
        })
        .sum();
    assert_eq!(documented, routes.len());
}

#[tokio::test]
async fn errors_and_the_bearer_token_are_described() {
    let app = spawn_app().await;
    let document: Value = reqwest::get(app.url("/api/openapi.json"))
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let schemas = &document["components"]["schemas"];
    assert!(!schemas["ErrorBody"].is_null(), "{schemas}");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let profile = &document["paths"]["/api/v1/learners/{id}"]["get"];
    assert!(!profile["responses"]["404"].is_null(), "{profile}");
}
