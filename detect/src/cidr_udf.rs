//! `cidr_match(ip, 'net/len')`: true when the text `ip` (or any element of a
//! list of texts) is an IP address inside the network. Brackets around an
//! IPv6 address are ignored; text that is not an address is false; null
//! stays null. Sigma's `|cidr` modifier compiles to it.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, BooleanBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use ipnet::IpNet;

#[derive(Debug)]
pub(crate) struct CidrMatch {
    signature: Signature,
}

impl PartialEq for CidrMatch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for CidrMatch {}
impl Hash for CidrMatch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "dunes.cidr_match".hash(state);
    }
}

impl CidrMatch {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(CidrMatch {
            signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable),
        })
    }
}

/// Parses an address as it appears in `src_ip` / host lists.
fn addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

fn contains(net: &IpNet, s: &str) -> bool {
    match addr(s) {
        Some(IpAddr::V6(v6)) if matches!(net, IpNet::V4(_)) => v6
            .to_ipv4_mapped()
            .is_some_and(|v4| net.contains(&IpAddr::V4(v4))),
        Some(a) => net.contains(&a),
        None => false,
    }
}

impl ScalarUDFImpl for CidrMatch {
    fn name(&self) -> &str {
        "cidr_match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [
                DataType::Utf8 | DataType::Null | DataType::List(_),
                DataType::Utf8,
            ] => Ok(DataType::Boolean),
            other => plan_err!("cidr_match(text or list of text, 'net/len'), got {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [values, ColumnarValue::Scalar(ScalarValue::Utf8(Some(net)))] = args.args.as_slice()
        else {
            return exec_err!("cidr_match needs a literal network as its second argument");
        };
        let Ok(net) = net.parse::<IpNet>() else {
            return exec_err!("cidr_match: {net:?} is not a network like 10.0.0.0/8");
        };
        let values = values.to_array(args.number_rows)?;
        let out: BooleanArray = match values.data_type() {
            DataType::Utf8 => values
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(|s| contains(&net, s)))
                .collect(),
            DataType::List(_) => {
                let list = values.as_list::<i32>();
                let mut b = BooleanBuilder::with_capacity(list.len());
                for i in 0..list.len() {
                    if list.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    let items = list.value(i);
                    let hit = match items.as_string_opt::<i32>() {
                        Some(s) => s.iter().flatten().any(|s| contains(&net, s)),
                        None => false,
                    };
                    b.append_value(hit);
                }
                b.finish()
            }
            DataType::Null => BooleanArray::new_null(values.len()),
            other => return exec_err!("cidr_match over {other}"),
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn matches_v4_v6_mapped_and_lists() {
        let ctx = SessionContext::new();
        ctx.register_udf(CidrMatch::udf());
        let sql = "SELECT cidr_match(s, '127.0.0.0/8') AS a, cidr_match(s, 'fe80::/10') AS b \
                   FROM (VALUES ('127.0.0.1'), ('[::ffff:127.0.0.2]'), ('fe80::1'), \
                   ('10.0.0.1'), ('not-an-ip'), (NULL)) AS t(s)";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            rows[1..],
            [
                "| true  | false |",
                "| true  | false |",
                "| false | true  |",
                "| false | false |",
                "| false | false |",
                "|       |       |",
            ]
        );
        let sql =
            "SELECT cidr_match(make_array('example.org', '169.254.169.254'), '169.254.0.0/16')";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let b = batches[0].column(0).as_boolean();
        assert!(b.value(0));
    }
}
