//! Prometheus text, as `/metrics` answers it.

/// Splits `name{a="1",b="2"}` into the name and its sorted label pairs.
fn parse_series(series: &str) -> Option<(String, Vec<(String, String)>)> {
    let series = series.trim();
    let Some(open) = series.find('{') else {
        return Some((series.to_owned(), Vec::new()));
    };
    let name = series[..open].to_owned();
    let inner = series[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = rest[eq + 1..].strip_prefix('"')?;
        // Values may hold escaped quotes.
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(match next {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                other => value.push(other),
            }
        }
        let end = end?;
        labels.push((key, value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    labels.sort();
    Some((name, labels))
}

/// One sample: metric name, sorted label pairs, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Every sample of the text.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let split = line.rfind(' ')?;
            let (series, value) = line.split_at(split);
            let value: f64 = value.trim().parse().ok()?;
            let (name, labels) = parse_series(series)?;
            Some((name, labels, value))
        })
        .collect()
}

/// The value of the sample `query` (`name{labels}`, every label given, any order).
pub fn sample(text: &str, query: &str) -> Option<f64> {
    let (name, labels) = parse_series(query).expect("a metric query like name{a=\"b\"}");
    samples(text)
        .into_iter()
        .find(|(n, l, _)| *n == name && *l == labels)
        .map(|(_, _, v)| v)
}

/// The query of `tollgate_token_requests_total` for `provider`, `kind` (`login`,
/// `refresh`) and `outcome` (`success`, `failure`), for [`sample`].
pub fn token_requests_query(provider: &str, kind: &str, outcome: &str) -> String {
    format!(
        "tollgate_token_requests_total{{provider=\"{provider}\",kind=\"{kind}\",outcome=\"{outcome}\"}}"
    )
}

/// Failed `tollgate_token_requests_total` of `provider`, logins and refreshes together.
pub fn token_request_failures(text: &str, provider: &str) -> f64 {
    sample_sum(
        text,
        "tollgate_token_requests_total",
        &[("provider", provider), ("outcome", "failure")],
    )
}

/// The sum of every sample of `name` whose labels include all of `labels`.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_queries_ignore_label_order() {
        let text = "# HELP x y\n# TYPE tollgate_token_requests_total counter\n\
            tollgate_token_requests_total{kind=\"login\",outcome=\"success\",provider=\"idp\"} 3\n\
            tollgate_build_info{version=\"0.1.0\"} 1\n\
            plain 2.5\n";
        assert_eq!(
            sample(
                text,
                "tollgate_token_requests_total{provider=\"idp\",kind=\"login\",outcome=\"success\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(text, "tollgate_token_requests_total{provider=\"idp\"}"),
            None
        );
        assert_eq!(sample(text, "plain"), Some(2.5));
        assert_eq!(
            sample_sum(
                text,
                "tollgate_token_requests_total",
                &[("provider", "idp")]
            ),
            3.0
        );
    }
}
