//! A small, bounded element tree read with quick-xml's namespace-aware reader.
//!
//! The tree keeps what the BPMN builder needs: each element's namespace (BPMN, Zeebe or other),
//! local name, unprefixed attributes, direct text content and line. Building it is iterative, so
//! a hostile document can neither overflow the stack nor nest deeper than
//! [`NESTING_DEPTH_MAX`].

use quick_xml::NsReader;
use quick_xml::encoding::Decoder;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use super::BpmnError;

/// Namespace URI of BPMN 2.0 model elements.
pub(super) const BPMN_NAMESPACE: &[u8] = b"http://www.omg.org/spec/BPMN/20100524/MODEL";
/// Namespace URI of the Zeebe extension elements.
pub(super) const ZEEBE_NAMESPACE: &[u8] = b"http://camunda.org/schema/zeebe/1.0";
/// Deepest element nesting accepted (the root element is at depth 1).
pub(super) const NESTING_DEPTH_MAX: usize = 64;

/// Index of a node in [`Document::nodes`].
pub(super) type NodeId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Namespace {
    /// The BPMN model namespace, or no namespace at all (documents written without `xmlns`).
    Bpmn,
    Zeebe,
    /// Diagram interchange, Modeler attributes and any other extension: ignored.
    Other,
}

#[derive(Debug)]
pub(super) struct Node {
    pub namespace: Namespace,
    /// The local name (`serviceTask` for `<bpmn:serviceTask>`).
    pub name: String,
    /// Attributes without a prefix, in document order (`xsi:type`, `modeler:*` are dropped).
    pub attributes: Vec<(String, String)>,
    pub children: Vec<NodeId>,
    /// The element's own text and CDATA content, unescaped (descendants' text excluded).
    pub text: String,
    /// 1-based line of the end of the start tag.
    pub line: u32,
}

impl Node {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn is(&self, namespace: Namespace, name: &str) -> bool {
        self.namespace == namespace && self.name == name
    }
}

/// The element tree of one document; node 0 is the root element.
#[derive(Debug)]
pub(super) struct Document {
    pub nodes: Vec<Node>,
}

impl Document {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    /// The children of `parent` in `namespace`, in document order.
    pub fn children_in(
        &self,
        parent: NodeId,
        namespace: Namespace,
    ) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes[parent]
            .children
            .iter()
            .copied()
            .filter(move |&child| self.nodes[child].namespace == namespace)
    }

    /// The first child of `parent` with this namespace and local name.
    pub fn child(&self, parent: NodeId, namespace: Namespace, name: &str) -> Option<NodeId> {
        self.nodes[parent]
            .children
            .iter()
            .copied()
            .find(|&child| self.nodes[child].is(namespace, name))
    }

    /// Reads a whole document. Errors say where the XML is malformed (line and column).
    pub fn parse(xml: &[u8]) -> Result<Self, BpmnError> {
        let mut reader = NsReader::from_reader(xml);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        let decoder = reader.decoder();
        let mut lines = LineCounter::default();
        let mut nodes: Vec<Node> = Vec::new();
        let mut open: Vec<NodeId> = Vec::new();
        loop {
            let (resolved, event) = match reader.read_resolved_event() {
                Ok(read) => read,
                Err(error) => {
                    let offset = reader.error_position();
                    return Err(malformed(xml, offset, &error.to_string()));
                }
            };
            let namespace = namespace_of(&resolved);
            let position = reader.buffer_position();
            let (start, has_children) = match event {
                Event::Start(start) => (start, true),
                Event::Empty(start) => (start, false),
                Event::End(_) => {
                    open.pop();
                    continue;
                }
                Event::Text(text) => {
                    let text = text
                        .unescape()
                        .map_err(|error| malformed(xml, position, &error.to_string()))?;
                    append_text(xml, position, &mut nodes, &open, &text)?;
                    continue;
                }
                Event::CData(data) => {
                    let text = data
                        .decode()
                        .map_err(|error| malformed(xml, position, &error.to_string()))?;
                    append_text(xml, position, &mut nodes, &open, &text)?;
                    continue;
                }
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => continue,
            };
            if open.is_empty() && !nodes.is_empty() {
                return Err(malformed(
                    xml,
                    position,
                    "the document has a second root element; a BPMN resource has exactly one \
                     <bpmn:definitions> root",
                ));
            }
            if open.len() >= NESTING_DEPTH_MAX {
                return Err(malformed(
                    xml,
                    position,
                    &format!(
                        "elements are nested deeper than {NESTING_DEPTH_MAX} levels; flatten the \
                         process (fewer nested subprocesses)"
                    ),
                ));
            }
            let line = lines.line_at(xml, position.saturating_sub(1));
            let namespace = namespace.map_err(|prefix| {
                malformed(
                    xml,
                    position,
                    &format!(
                        "namespace prefix '{}' is not declared; add xmlns:{0}=\"...\" to the \
                         definitions element",
                        String::from_utf8_lossy(&prefix)
                    ),
                )
            })?;
            let node = read_start(xml, position, namespace, &start, decoder, line)?;
            let id = nodes.len();
            nodes.push(node);
            if let Some(&parent) = open.last() {
                nodes[parent].children.push(id);
            }
            if has_children {
                open.push(id);
            }
        }
        if let Some(&unclosed) = open.last() {
            return Err(BpmnError::new(format!(
                "malformed XML: the document ends before element <{}> (line {}) is closed; the \
                 file is probably truncated",
                nodes[unclosed].name, nodes[unclosed].line
            )));
        }
        if nodes.is_empty() {
            return Err(BpmnError::new(
                "malformed XML: the document has no root element; expected <bpmn:definitions>",
            ));
        }
        Ok(Self { nodes })
    }
}

fn read_start(
    xml: &[u8],
    position: u64,
    namespace: Namespace,
    start: &BytesStart,
    decoder: Decoder,
    line: u32,
) -> Result<Node, BpmnError> {
    let name = utf8(xml, position, start.local_name().as_ref())?.to_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| malformed(xml, position, &error.to_string()))?;
        if attribute.key.as_namespace_binding().is_some() || attribute.key.prefix().is_some() {
            continue;
        }
        let key = utf8(xml, position, attribute.key.local_name().as_ref())?.to_owned();
        let value = attribute
            .decode_and_unescape_value(decoder)
            .map_err(|error| malformed(xml, position, &error.to_string()))?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Node {
        namespace,
        name,
        attributes,
        children: Vec::new(),
        text: String::new(),
        line,
    })
}

fn append_text(
    xml: &[u8],
    position: u64,
    nodes: &mut [Node],
    open: &[NodeId],
    text: &str,
) -> Result<(), BpmnError> {
    match open.last() {
        Some(&node) => {
            // Only BPMN text is ever read (conditions, timers); diagram whitespace is dropped.
            if nodes[node].namespace == Namespace::Bpmn {
                nodes[node].text.push_str(text);
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(malformed(
            xml,
            position,
            "text outside the root element; a BPMN resource holds only <bpmn:definitions>",
        )),
    }
}

fn utf8<'a>(xml: &[u8], position: u64, bytes: &'a [u8]) -> Result<&'a str, BpmnError> {
    std::str::from_utf8(bytes).map_err(|_| {
        malformed(
            xml,
            position,
            "a name is not valid UTF-8; save the file as UTF-8",
        )
    })
}

fn namespace_of(resolved: &ResolveResult) -> Result<Namespace, Vec<u8>> {
    match resolved {
        ResolveResult::Bound(namespace) if namespace.0 == BPMN_NAMESPACE => Ok(Namespace::Bpmn),
        ResolveResult::Bound(namespace) if namespace.0 == ZEEBE_NAMESPACE => Ok(Namespace::Zeebe),
        ResolveResult::Bound(_) => Ok(Namespace::Other),
        ResolveResult::Unbound => Ok(Namespace::Bpmn),
        ResolveResult::Unknown(prefix) => Err(prefix.clone()),
    }
}

/// A malformed-XML error located by line and column (both 1-based) and byte offset.
fn malformed(xml: &[u8], offset: u64, what: &str) -> BpmnError {
    let (line, column) = line_and_column(xml, offset);
    BpmnError::new(format!(
        "malformed XML at line {line}, column {column} (byte {offset}): {what}"
    ))
}

fn line_and_column(xml: &[u8], offset: u64) -> (usize, usize) {
    let end = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
    let before = &xml[..end];
    let line = before.split(|&byte| byte == b'\n').count();
    let column = match before.iter().rposition(|&byte| byte == b'\n') {
        Some(newline) => end - newline,
        None => end + 1,
    };
    (line, column)
}

/// Counts lines incrementally: positions are asked for in increasing order.
#[derive(Debug, Default)]
struct LineCounter {
    counted_until: usize,
    newlines: u32,
}

impl LineCounter {
    fn line_at(&mut self, xml: &[u8], offset: u64) -> u32 {
        let end = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
        if end > self.counted_until {
            let newlines = xml[self.counted_until..end]
                .split(|&byte| byte == b'\n')
                .count()
                - 1;
            self.newlines = self
                .newlines
                .saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
            self.counted_until = end;
        }
        self.newlines.saturating_add(1)
    }
}
