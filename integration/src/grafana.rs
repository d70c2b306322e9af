//! A Grafana dashboard's JSON model read the way Grafana runs it against Prometheus: every
//! panel's queries (the panels of collapsed rows included), the template variables, and the
//! substitution of `$variables` by concrete values, so that a real Prometheus can evaluate
//! each query as the dashboard would send it.

use std::path::Path;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// A dashboard's JSON model.
pub struct Dashboard {
    pub json: Value,
}

/// One panel (rows included), with the panels of collapsed rows flattened in.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub kind: String,
    pub json: Value,
}

/// One query of a panel.
#[derive(Debug, Clone)]
pub struct Target {
    /// The panel's title.
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    /// The target's own datasource, else the panel's.
    pub datasource: Value,
}

/// A template variable.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    /// `datasource`, `query`, `custom`, `constant`, `textbox`, `interval`, ...
    pub kind: String,
    /// The query text (`query` variables: the `label_values(...)` string).
    pub query: Option<String>,
    pub include_all: bool,
    pub all_value: Option<String>,
    pub datasource: Value,
}

impl Dashboard {
    pub fn load(path: &Path) -> anyhow::Result<Dashboard> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Ok(Dashboard { json })
    }

    /// Every panel, in order; a row's own `panels` (a collapsed row keeps its panels there)
    /// follow the row.
    pub fn panels(&self) -> Vec<Panel> {
        fn walk(list: &Value, out: &mut Vec<Panel>) {
            for p in list.as_array().into_iter().flatten() {
                out.push(Panel {
                    title: p["title"].as_str().unwrap_or("").to_string(),
                    kind: p["type"].as_str().unwrap_or("").to_string(),
                    json: p.clone(),
                });
                walk(&p["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&self.json["panels"], &mut out);
        out
    }

    /// Every Prometheus query of every panel.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for panel in self.panels() {
            for t in panel.json["targets"].as_array().into_iter().flatten() {
                let datasource = if t["datasource"].is_null() {
                    panel.json["datasource"].clone()
                } else {
                    t["datasource"].clone()
                };
                out.push(Target {
                    panel: panel.title.clone(),
                    ref_id: t["refId"].as_str().unwrap_or("").to_string(),
                    expr: t["expr"].as_str().unwrap_or("").to_string(),
                    datasource,
                });
            }
        }
        out
    }

    pub fn variables(&self) -> Vec<Variable> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| Variable {
                name: v["name"].as_str().unwrap_or("").to_string(),
                kind: v["type"].as_str().unwrap_or("").to_string(),
                // Grafana 10+ keeps a Prometheus variable's query in an object; older
                // dashboards have the string itself.
                query: v["query"]["query"]
                    .as_str()
                    .or_else(|| v["query"].as_str())
                    .map(str::to_string),
                include_all: v["includeAll"].as_bool().unwrap_or(false),
                all_value: v["allValue"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                datasource: v["datasource"].clone(),
            })
            .collect()
    }

    /// The values a test gives the variables: each variable with an "All" option gets its
    /// `allValue` (`.*` when unset, what "All" selects); constants and text boxes their
    /// value; Grafana's built-in ranges (`$__rate_interval`, `$__interval`, `$__range`)
    /// `range_secs`. Datasource variables get none: they belong in `datasource` fields, not
    /// in queries. A variable of another kind is an error (teach this function its value).
    pub fn test_values(&self, range_secs: u64) -> anyhow::Result<Vec<(String, String)>> {
        let range = format!("{range_secs}s");
        let mut values: Vec<(String, String)> = vec![
            ("__rate_interval".into(), range.clone()),
            ("__interval".into(), range.clone()),
            ("__interval_ms".into(), (range_secs * 1000).to_string()),
            ("__range".into(), range),
            ("__range_s".into(), range_secs.to_string()),
            ("__range_ms".into(), (range_secs * 1000).to_string()),
        ];
        for v in self.variables() {
            let value = match v.kind.as_str() {
                "datasource" => continue,
                "query" | "custom" if v.include_all => {
                    v.all_value.clone().unwrap_or_else(|| ".*".to_string())
                }
                "constant" | "textbox" => v.query.clone().unwrap_or_default(),
                other => bail!(
                    "variable ${} ({other}, no \"All\" option): the dashboard test does not \
                     know which value to give it",
                    v.name
                ),
            };
            values.push((v.name.clone(), value));
        }
        Ok(values)
    }
}

/// `text` with every Grafana variable reference (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`, `[[name:format]]`) replaced by its value. A reference to a variable not in
/// `values` is an error naming it, except all-digit ones (`$1` of `label_replace`), which
/// Grafana too leaves as they are.
pub fn substitute(text: &str, values: &[(String, String)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, name, len)) = next_reference(rest) {
        out.push_str(&rest[..at]);
        match values.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => out.push_str(v),
            None if name.bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str(&rest[at..at + len]);
            }
            None => bail!("unknown variable ${name} in {text:?}"),
        }
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables `text` refers to, in order.
pub fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((at, name, len)) = next_reference(rest) {
        out.push(name);
        rest = &rest[at + len..];
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The next variable reference in `text`: where it starts, the variable's name, its length.
fn next_reference(text: &str) -> Option<(usize, String, usize)> {
    let mut from = 0;
    while from < text.len() {
        let at = from + text[from..].find(['$', '['])?;
        let tail = &text[at..];
        if let Some(inner) = tail.strip_prefix("${") {
            if let Some(end) = inner.find('}') {
                let name: String = inner[..end].chars().take_while(|c| is_word(*c)).collect();
                if !name.is_empty() {
                    return Some((at, name, end + 3));
                }
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let name: String = inner.chars().take_while(|c| is_word(*c)).collect();
            if !name.is_empty() {
                let len = name.len() + 1;
                return Some((at, name, len));
            }
        } else if let Some(inner) = tail.strip_prefix("[[") {
            if let Some(end) = inner.find("]]") {
                let name: String = inner[..end].chars().take_while(|c| is_word(*c)).collect();
                let rest = &inner[name.len()..end];
                if !name.is_empty() && (rest.is_empty() || rest.starts_with(':')) {
                    return Some((at, name, end + 4));
                }
            }
        }
        from = at + 1;
    }
    None
}

/// The characters of `text` outside quoted strings (`"..."`, `'...'` with backslash
/// escapes, `` `...` `` raw), with their byte offsets.
fn unquoted(text: &str) -> Vec<(usize, char)> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(q) if c == '\\' && q != '`' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '"' | '\'' | '`') => quote = Some(c),
            None => out.push((i, c)),
        }
    }
    out
}

/// A `label_values(selector, label)` or `label_values(label)` variable query: the selector
/// (if any) and the label. `None` for other queries.
pub fn label_values_query(query: &str) -> Option<(Option<String>, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    // The last comma outside braces, parentheses and quotes separates the two.
    let mut depth = 0i32;
    let mut split = None;
    for (i, c) in unquoted(inner) {
        match c {
            '{' | '(' => depth += 1,
            '}' | ')' => depth -= 1,
            ',' if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    Some(match split {
        Some(i) => (
            Some(inner[..i].trim().to_string()),
            inner[i + 1..].trim().to_string(),
        ),
        None => (None, inner.trim().to_string()),
    })
}

/// The label matchers of `expr` whose value holds a variable, as (metric name, label): each
/// is a label a dashboard user filters that metric on. The metric is empty for a selector
/// without a name (`{__name__=~"..."}`).
pub fn variable_filters(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let chars = unquoted(expr);
    let opens = chars.iter().filter(|(_, c)| *c == '{').map(|(i, _)| *i);
    for open in opens {
        let Some(close) = chars
            .iter()
            .find(|(i, c)| *i > open && *c == '}')
            .map(|(i, _)| *i)
        else {
            break;
        };
        let before = &expr[..open];
        let name_start = before
            .rfind(|c: char| !(is_word(c) || c == ':'))
            .map_or(0, |i| i + 1);
        let metric = before[name_start..].to_string();
        // Matchers: split at the unquoted commas between the braces.
        let mut from = open + 1;
        let commas = chars
            .iter()
            .filter(|(i, c)| *i > open && *i < close && *c == ',')
            .map(|(i, _)| *i)
            .chain(std::iter::once(close));
        for comma in commas {
            let matcher = &expr[from..comma];
            from = comma + 1;
            let Some(op) = matcher.find(['=', '!']) else {
                continue;
            };
            if !references(&matcher[op..]).is_empty() {
                out.push((metric.clone(), matcher[..op].trim().to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Vec<(String, String)> {
        vec![
            ("__rate_interval".into(), "60s".into()),
            ("instance".into(), ".*".into()),
            ("model".into(), "gpt".into()),
        ]
    }

    #[test]
    fn every_reference_form_is_substituted() {
        let got = substitute(
            "rate(x{a=~\"$instance\",b=~\"${model}\",c=~\"${model:regex}\",d=~\"[[instance]]\",e=~\"[[model:pipe]]\"}[$__rate_interval])",
            &values(),
        )
        .unwrap();
        assert_eq!(
            got,
            "rate(x{a=~\".*\",b=~\"gpt\",c=~\"gpt\",d=~\".*\",e=~\"gpt\"}[60s])"
        );
        // Kept: a lone `$`, `[` of a range, `${}`, capture groups of `label_replace`.
        let plain =
            "x[5m] and y[[1]] $ ${} {a=\"$\"} label_replace(x, \"a\", \"$1\", \"b\", \"(.*)\")";
        assert_eq!(substitute(plain, &values()).unwrap(), plain);
    }

    #[test]
    fn an_unknown_variable_is_an_error_that_names_it() {
        let err = substitute("x{a=~\"$nope\"}", &values()).unwrap_err();
        assert!(err.to_string().contains("$nope"), "{err}");
        assert_eq!(
            references("${a} $b_c [[d:raw]] $__range"),
            ["a", "b_c", "d", "__range"]
        );
    }

    #[test]
    fn label_values_queries_split_at_the_last_top_level_comma() {
        assert_eq!(
            label_values_query("label_values(m{a=~\"x,y\",b=\"c\"}, lbl)"),
            Some((Some("m{a=~\"x,y\",b=\"c\"}".into()), "lbl".into()))
        );
        assert_eq!(
            label_values_query("label_values(job)"),
            Some((None, "job".into()))
        );
        assert_eq!(label_values_query("query_result(up)"), None);
    }

    #[test]
    fn variable_filters_name_the_metric_and_label() {
        let expr = "sum(rate(m_total{job=~\"$job\",x=\"1\", y=~\"a,$model\"}[$__rate_interval])) / sum(n{z!~\"${v}\", w=\"}\\\"{\"})";
        assert_eq!(
            variable_filters(expr),
            [
                ("m_total".to_string(), "job".to_string()),
                ("m_total".to_string(), "y".to_string()),
                ("n".to_string(), "z".to_string()),
            ]
        );
        assert_eq!(
            variable_filters("label_values({__name__=~\"a.+\",job=~\"$job\"}, l)"),
            [(String::new(), "job".to_string())]
        );
    }

    #[test]
    fn panels_of_collapsed_rows_and_targets_are_found() {
        let dash = Dashboard {
            json: json!({
                "panels": [
                    {"type": "timeseries", "title": "A", "datasource": {"uid": "${ds}"},
                     "targets": [{"refId": "A", "expr": "up"}]},
                    {"type": "row", "title": "R", "collapsed": true, "panels": [
                        {"type": "stat", "title": "B", "targets": [
                            {"refId": "A", "expr": "x", "datasource": {"uid": "$ds"}}]}
                    ]}
                ],
                "templating": {"list": [
                    {"type": "datasource", "name": "ds", "query": "prometheus"},
                    {"type": "query", "name": "job", "includeAll": true, "allValue": "",
                     "query": {"query": "label_values(job)", "refId": "X"}},
                    {"type": "query", "name": "one", "query": "label_values(l)"}
                ]}
            }),
        };
        let titles: Vec<String> = dash.panels().into_iter().map(|p| p.title).collect();
        assert_eq!(titles, ["A", "R", "B"]);
        let targets = dash.targets();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].datasource["uid"], "${ds}");
        assert_eq!(targets[1].datasource["uid"], "$ds");
        let vars = dash.variables();
        assert_eq!(vars[1].query.as_deref(), Some("label_values(job)"));
        assert_eq!(vars[2].query.as_deref(), Some("label_values(l)"));
        let err = dash.test_values(60).unwrap_err();
        assert!(err.to_string().contains("$one"), "{err}");
    }
}
