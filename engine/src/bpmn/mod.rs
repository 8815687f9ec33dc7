//! BPMN 2.0 XML (as Camunda Modeler writes it) to [`crate::model::Process`].
//!
//! [`parse`] reads the resource into a bounded element tree (`xml`), checks the definitions
//! (unique ids, messages, errors), then builds one [`Process`] per executable `bpmn:process`
//! (`process`). Elements are matched by namespace URI and local name, so any prefix works;
//! diagram (`bpmndi:`, `dc:`, `di:`) and other foreign elements are ignored. Everything the
//! engine cannot run is rejected with a message naming the element's id and type. Expressions
//! are stored as written; FEEL is parsed later by [`Process::compile_expressions`].

mod process;
mod xml;

use std::collections::HashMap;

use crate::model::Process;

use xml::{Document, Namespace, NodeId};

/// Largest resource accepted: above the largest request a broker takes (`maxMessageSize` is
/// at most 7 MiB), so the gateway's limit is the one users meet.
pub const RESOURCE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Deepest element nesting accepted (diagram elements included).
pub const NESTING_DEPTH_MAX: usize = xml::NESTING_DEPTH_MAX;

/// A resource that cannot be deployed; the message names the element id and type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BpmnError {
    pub message: String,
}

impl BpmnError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Parses one `.bpmn` resource into its executable processes, in document order.
pub fn parse(xml: &[u8]) -> Result<Vec<Process>, BpmnError> {
    if xml.iter().all(u8::is_ascii_whitespace) {
        return Err(BpmnError::new(
            "the resource is empty; expected a BPMN 2.0 XML document with a <bpmn:definitions> \
             root",
        ));
    }
    if xml.len() > RESOURCE_BYTES_MAX {
        return Err(BpmnError::new(format!(
            "the resource is {} bytes, more than the maximum of {RESOURCE_BYTES_MAX} bytes; split \
             it into several resources",
            xml.len()
        )));
    }
    let document = Document::parse(xml)?;
    let root = document.root();
    if !root.is(Namespace::Bpmn, "definitions") {
        return Err(BpmnError::new(format!(
            "the root element is <{}> (line {}), but a BPMN resource must start with \
             <bpmn:definitions> in namespace {}",
            root.name,
            root.line,
            String::from_utf8_lossy(xml::BPMN_NAMESPACE)
        )));
    }
    let definitions = Definitions::collect(&document)?;
    let mut processes = Vec::new();
    let mut any_process = false;
    for child in document.children_in(0, Namespace::Bpmn) {
        let node = document.node(child);
        if node.name != "process" {
            continue;
        }
        any_process = true;
        if node.attribute("isExecutable") == Some("true") {
            processes.push(process::build(&document, &definitions, child)?);
        }
    }
    if !any_process {
        return Err(BpmnError::new(
            "the resource contains no <bpmn:process>; add a process to deploy",
        ));
    }
    if processes.is_empty() {
        return Err(BpmnError::new(
            "no process of the resource is executable; set isExecutable=\"true\" on the \
             <bpmn:process> to deploy (in the Modeler: the process's 'Executable' checkbox)",
        ));
    }
    Ok(processes)
}

/// Root-level declarations shared by the processes of a resource.
#[derive(Debug)]
struct Definitions {
    /// `bpmn:message` by id.
    messages: HashMap<String, NodeId>,
    /// `bpmn:error` by id.
    errors: HashMap<String, NodeId>,
}

impl Definitions {
    fn collect(document: &Document) -> Result<Self, BpmnError> {
        check_unique_ids(document)?;
        let mut messages = HashMap::new();
        let mut errors = HashMap::new();
        for child in document.children_in(0, Namespace::Bpmn) {
            let node = document.node(child);
            let table = match node.name.as_str() {
                "message" => &mut messages,
                "error" => &mut errors,
                _ => continue,
            };
            if let Some(id) = node.attribute("id") {
                table.insert(id.to_owned(), child);
            }
        }
        Ok(Self { messages, errors })
    }
}

/// Every BPMN element with an id must have a unique one in the resource.
fn check_unique_ids(document: &Document) -> Result<(), BpmnError> {
    let mut seen: HashMap<&str, NodeId> = HashMap::new();
    for (index, node) in document.nodes.iter().enumerate() {
        if node.namespace != Namespace::Bpmn {
            continue;
        }
        let Some(id) = node.attribute("id") else {
            continue;
        };
        if let Some(&first) = seen.get(id) {
            let first = document.node(first);
            return Err(BpmnError::new(format!(
                "the id '{id}' is used twice: by a '{}' (line {}) and by a '{}' (line {}); ids \
                 must be unique within a resource, rename one of them",
                first.name, first.line, node.name, node.line
            )));
        }
        seen.insert(id, index);
    }
    Ok(())
}
