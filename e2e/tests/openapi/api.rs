//! One service's OpenAPI document, and every real answer checked against it.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Client, Method, RequestBuilder};
use serde_json::{Value, json};

use crate::IMPRACTICAL;

/// One service's document and what the test saw of it.
pub struct Api {
    name: &'static str,
    base: String,
    pub doc: Value,
    /// (METHOD, path template, status) answered.
    seen: BTreeSet<(String, String, u16)>,
    pub failures: Vec<String>,
}

/// A real answer.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Api {
    pub async fn fetch(name: &'static str, base: &str, path: &str) -> Api {
        let doc: Value = reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{name}: {}", doc["openapi"]);
        assert!(!doc["paths"].as_object().unwrap().is_empty(), "{name}: no paths");
        let api = Api { name, base: base.to_owned(), doc, seen: BTreeSet::new(), failures: Vec::new() };
        // Every schema in the document must compile as JSON Schema.
        for (schema, _) in api.doc["components"]["schemas"].as_object().unwrap() {
            api.validator(&json!({"$ref": format!("#/components/schemas/{schema}")}));
        }
        api
    }

    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{}: schema {schema} does not compile: {e}", self.name))
    }

    pub fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let validator = self.validator(schema);
        let errors: Vec<String> =
            validator.iter_errors(instance).map(|e| format!("{e} (at `{}`)", e.instance_path())).collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Follow a `$ref` into the document.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).unwrap_or(&Value::Null),
            None => value,
        }
    }

    /// The documented template matching `path`; literal segments beat parameters.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (t, s) in parts.iter().zip(&segments) {
                    if t.starts_with('{') {
                        if s.is_empty() {
                            return None;
                        }
                    } else if t == s {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template.clone()))
            })
            .max()
            .map(|(_, t)| t)
    }

    fn documented_methods(&self, template: &str) -> BTreeSet<String> {
        self.doc["paths"][template].as_object().unwrap().keys().map(|m| m.to_uppercase()).collect()
    }

    /// Check one answer against the document; failures are collected.
    pub fn check(&mut self, method: &str, path: &str, answer: &Answer) {
        if let Err(e) = self.conforms(method, path, answer) {
            let body = String::from_utf8_lossy(&answer.body);
            let body: String = body.chars().take(300).collect();
            self.failures.push(format!("{} {method} {path} -> {}: {e}\n    body: {body}", self.name, answer.status));
        }
    }

    fn conforms(&mut self, method: &str, path: &str, answer: &Answer) -> Result<(), String> {
        let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Some(template) = self.template(path) else {
            self.seen.insert((method.to_owned(), "(no such path)".to_owned(), answer.status));
            if answer.status != 404 {
                return Err("undocumented path answered other than 404".into());
            }
            return self.problem_body(answer, content_type.as_deref());
        };
        let op = self.doc["paths"][&template][method.to_lowercase()].clone();
        if op.is_null() {
            self.seen.insert((method.to_owned(), format!("{template} (other method)"), answer.status));
            if answer.status != 405 {
                return Err(format!("{method} is not documented for {template}, so 405 was expected"));
            }
            let allow: BTreeSet<String> = answer
                .headers
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(',')
                .map(|m| m.trim().to_uppercase())
                .filter(|m| !m.is_empty() && m != "HEAD")
                .collect();
            let documented = self.documented_methods(&template);
            if allow != documented {
                return Err(format!("Allow {allow:?} but the document has {documented:?}"));
            }
            return self.problem_body(answer, content_type.as_deref());
        }
        self.seen.insert((method.to_owned(), template.clone(), answer.status));
        let responses = &op["responses"];
        let documented = responses.get(answer.status.to_string()).or_else(|| responses.get("default"));
        let Some(response) = documented else {
            let listed: Vec<&String> = responses.as_object().unwrap().keys().collect();
            return Err(format!("status not documented (documented: {listed:?})"));
        };
        let response = self.resolve(response).clone();
        let Some(content) = response["content"].as_object() else {
            return if answer.body.is_empty() { Ok(()) } else { Err("documented without a body, got one".into()) };
        };
        let essence = |t: &str| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let got = essence(content_type.as_deref().ok_or("no content-type")?);
        let Some((_, media)) = content.iter().find(|(t, _)| essence(t) == got) else {
            return Err(format!("content-type {got} not documented (documented: {:?})", content.keys()));
        };
        if got == "application/json" || got.ends_with("+json") {
            let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("body is not JSON ({e})"))?;
            self.validate(&media["schema"], &body)?;
            if got == shared::problem::CONTENT_TYPE && body["status"] != answer.status {
                return Err("problem `status` differs from the response status".into());
            }
        }
        Ok(())
    }

    /// The body of an answer outside every operation must still be a problem.
    fn problem_body(&self, answer: &Answer, content_type: Option<&str>) -> Result<(), String> {
        if !content_type.is_some_and(|t| t.starts_with(shared::problem::CONTENT_TYPE)) {
            return Err(format!("content-type {content_type:?} is not problem+json"));
        }
        let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("body is not JSON ({e})"))?;
        self.validate(&json!({"$ref": "#/components/schemas/Problem"}), &body)
    }

    /// Send, check, return.
    pub async fn call(&mut self, request: RequestBuilder) -> Answer {
        let request = request.build().unwrap();
        let (method, path) = (request.method().to_string(), request.url().path().to_owned());
        let client = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let response = client.execute(request).await.unwrap();
        let answer = Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        };
        self.check(&method, &path, &answer);
        answer
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        Client::new().request(method, format!("{}{path}", self.base))
    }

    /// Documented statuses never answered, except those only impractical examples explain.
    pub fn unexercised(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (template, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let method = method.to_uppercase();
                for (status, response) in op["responses"].as_object().unwrap() {
                    let code: u16 = status.parse().unwrap();
                    if code >= 500 || self.seen.contains(&(method.clone(), template.clone(), code)) {
                        continue;
                    }
                    let examples: Vec<String> = self.resolve(response)["content"]
                        .as_object()
                        .into_iter()
                        .flat_map(|c| c.values())
                        .flat_map(|m| m["examples"].as_object().into_iter().flat_map(|e| e.keys().cloned()))
                        .collect();
                    if !examples.is_empty() && examples.iter().all(|e| IMPRACTICAL.contains(&e.as_str())) {
                        continue;
                    }
                    missing.push(format!("{} {method} {template} {code} (examples: {examples:?})", self.name));
                }
            }
        }
        missing
    }

    /// Every documented path with a method it does not document: 405 with `Allow`.
    pub async fn probe_other_methods(&mut self, concrete: &BTreeMap<String, String>) {
        for template in self.doc["paths"].as_object().unwrap().keys().cloned().collect::<Vec<_>>() {
            let documented = self.documented_methods(&template);
            let method = ["PUT", "DELETE", "POST", "GET"].into_iter().find(|m| !documented.contains(*m)).unwrap();
            let request = self.req(Method::from_bytes(method.as_bytes()).unwrap(), &concrete[&template]);
            let answer = self.call(request).await;
            assert_eq!(answer.status, 405, "{} {method} {template}", self.name);
        }
    }
}
