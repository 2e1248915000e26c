//! Finds the line and column of a field path (`routes[0].rules[1].version`) in YAML text, so that
//! validation problems, which serde_yaml cannot place, point at a line like parse errors do.
//!
//! Runs only when a file has problems: one pass over yaml-rust2's marked events, building the
//! path of every key and sequence item as it goes.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

enum Frame {
    /// In a mapping: the key being read or the key whose value is being read.
    Map { key: Option<String>, at_key: bool },
    /// In a sequence: the index of the next item.
    Seq { index: usize },
}

struct Locator<'p> {
    target: &'p str,
    stack: Vec<Frame>,
    found: Option<Marker>,
}

impl Locator<'_> {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some(k), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Frame::Map { key: None, .. } => {}
                Frame::Seq { index } => path.push_str(&format!("[{index}]")),
            }
        }
        path
    }

    fn hit(&mut self, mark: Marker) {
        if self.found.is_none() && self.path() == self.target {
            self.found = Some(mark);
        }
    }

    /// A value (scalar or whole collection) has ended: move the parent on.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { at_key, .. }) => *at_key = true,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Locator<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { key, at_key }) = self.stack.last_mut() {
                    if *at_key {
                        *key = Some(value);
                        *at_key = false;
                        self.hit(mark);
                        return;
                    }
                }
                self.hit(mark);
                self.value_done();
            }
            Event::Alias(_) => {
                self.hit(mark);
                self.value_done();
            }
            Event::MappingStart(..) => {
                self.hit(mark);
                self.stack.push(Frame::Map {
                    key: None,
                    at_key: true,
                });
            }
            Event::SequenceStart(..) => {
                self.hit(mark);
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

/// The 1-based line and column where `path` is written in `text`, or where its nearest written
/// parent is (a missing field is reported at the mapping that lacks it).
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut target = path;
    loop {
        if let Some(found) = find(text, target) {
            return Some(found);
        }
        let cut = target.rfind(['.', '['])?;
        target = &target[..cut];
    }
}

fn find(text: &str, target: &str) -> Option<(usize, usize)> {
    if target.is_empty() {
        return None;
    }
    let mut locator = Locator {
        target,
        stack: Vec::new(),
        found: None,
    };
    // A file that reached validation has already parsed; an error here only means no location.
    let _ = Parser::new_from_str(text).load(&mut locator, false);
    locator.found.map(|m| (m.line(), m.col() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "listeners:\n  - name: a\n    addr: x\nroutes:\n  - name: shop\n    versions:\n      - { name: s, weight: 1 }\n    rules:\n      - match: {}\n        version: canry\n";

    #[test]
    fn finds_keys_nested_in_sequences_and_flow_maps() {
        assert_eq!(locate(TEXT, "listeners[0].addr"), Some((3, 5)));
        assert_eq!(locate(TEXT, "routes[0].rules[0].version"), Some((10, 9)));
        assert_eq!(locate(TEXT, "routes[0].versions[0].weight"), Some((7, 20)));
    }

    #[test]
    fn missing_fields_fall_back_to_their_parent() {
        let (line, _) = locate(TEXT, "routes[0].cohort.key").unwrap();
        assert_eq!(line, 5, "the route's own line");
        assert_eq!(locate(TEXT, "admin"), None);
    }
}
