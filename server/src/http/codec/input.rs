//! One input of a JSON inference request. The fast read takes its `data`
//! straight into the typed buffer in the same pass as the rest of the body
//! when `datatype` and `shape` come before `data` (as every Triton and KServe
//! client writes them); otherwise, or when anything in the body is wrong, the
//! codec reads the body again keeping `data` as text ([`InputText`]) and
//! parses it afterwards, which names what is wrong. Parsing a large `data`
//! array was most of an HTTP request's cost, and keeping it as text meant
//! scanning it twice.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::tensor::{DataType, TensorData, element_count, json};

/// An input's `data`: parsed already, or the JSON text to parse.
pub(super) enum InputData<'a> {
    Text(&'a RawValue),
    Parsed(TensorData),
}

/// One input of the request.
pub(super) struct InputJson<'a> {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub parameters: Option<Map<String, Value>>,
    pub data: Option<InputData<'a>>,
}

/// The same input with its `data` kept as text (the second read).
#[derive(Deserialize)]
pub(super) struct InputText<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

impl<'a> From<InputText<'a>> for InputJson<'a> {
    fn from(t: InputText<'a>) -> InputJson<'a> {
        InputJson {
            name: t.name,
            shape: t.shape,
            datatype: t.datatype,
            parameters: t.parameters,
            data: t.data.map(InputData::Text),
        }
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Name,
    Shape,
    Datatype,
    Parameters,
    Data,
    #[serde(other)]
    Other,
}

const FIELDS: &[&str] = &["name", "shape", "datatype", "parameters", "data"];

impl<'de> Deserialize<'de> for InputJson<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<InputJson<'de>, D::Error> {
        deserializer.deserialize_struct("InputJson", FIELDS, InputVisitor)
    }
}

struct InputVisitor;

fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, field: &'static str) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(field));
    }
    Ok(())
}

impl<'de> Visitor<'de> for InputVisitor {
    type Value = InputJson<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputJson<'de>, A::Error> {
        let (mut name, mut shape, mut datatype) = (None, None::<Vec<i64>>, None::<String>);
        let (mut parameters, mut data) = (None, None);
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Name => once(&mut name, map.next_value()?, "name")?,
                Field::Shape => once(&mut shape, map.next_value()?, "shape")?,
                Field::Datatype => once(&mut datatype, map.next_value()?, "datatype")?,
                Field::Parameters => once(
                    &mut parameters,
                    map.next_value::<Option<Map<String, Value>>>()?,
                    "parameters",
                )?,
                Field::Data => {
                    let known = datatype.as_deref().and_then(|d| DataType::parse(d).ok());
                    // The limit on elements is checked with the rest of the input;
                    // here the buffer grows with what the body holds.
                    let count = shape.as_deref().and_then(|s| element_count(s, usize::MAX).ok());
                    let value = match known.zip(count) {
                        Some((datatype, count)) => {
                            InputData::Parsed(map.next_value_seed(DataSeed { datatype, count })?)
                        }
                        None => InputData::Text(map.next_value()?),
                    };
                    once(&mut data, value, "data")?;
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(InputJson {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            parameters: parameters.flatten(),
            data,
        })
    }
}

struct DataSeed {
    datatype: DataType,
    count: usize,
}

impl<'de> DeserializeSeed<'de> for DataSeed {
    type Value = TensorData;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<TensorData, D::Error> {
        json::deserialize_data(deserializer, self.datatype, self.count)
    }
}
