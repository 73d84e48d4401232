//! Conversion between world GenEval prompts and GenEval's JSONL metadata lines, e.g.
//! `{"tag": "position", "include": [{"class": "circle", "count": 1}, {"class": "star",
//! "count": 1, "position": ["right of", 0]}], "prompt": "a star to the right of a circle"}`.
//!
//! GenEval lists the reference object of a position first and marks the subject with
//! `"position": [relation, 0]`; counting prompts carry `"exclude": [{"class", "count": n + 1}]`.
//! Reading ignores the `prompt` text and rebuilds it in caption style from the structure.

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use super::geneval::{Category, GenEvalPrompt, Requirement};
use super::scene::{Color, Relation, Shape};

fn include_entry(r: &Requirement) -> Value {
    let mut v = json!({"class": r.shape.name(), "count": r.count});
    if let Some(c) = r.color {
        v["color"] = json!(c.name());
    }
    v
}

/// The GenEval metadata line for a prompt.
pub fn to_geneval_json(p: &GenEvalPrompt) -> Value {
    let mut include: Vec<Value> = p.include.iter().map(include_entry).collect();
    if let Some(rel) = p.relation {
        // GenEval: reference first, subject second pointing back at index 0.
        include.swap(0, 1);
        include[1]["position"] = json!([rel.geneval_name(), 0]);
    }
    let mut v = json!({"tag": p.category.tag(), "include": include, "prompt": p.text});
    if p.category == Category::Counting {
        let r = &p.include[0];
        v["exclude"] = json!([{"class": r.shape.name(), "count": r.count + 1}]);
    }
    v
}

/// One parsed `include` entry: requirement plus optional `position`.
fn parse_include(v: &Value, i: usize) -> anyhow::Result<(Requirement, Option<(Relation, u64)>)> {
    let field = |name: &str| format!("include[{i}].{name}");
    let obj = v.as_object().with_context(|| format!("include[{i}] is not an object"))?;
    let class = obj
        .get("class")
        .and_then(Value::as_str)
        .with_context(|| format!("{} missing or not a string", field("class")))?;
    let shape = Shape::from_name(class).with_context(|| {
        let known: Vec<&str> = Shape::ALL.iter().map(|s| s.name()).collect();
        format!(
            "{}: class {class:?} is not in the world (known: {})",
            field("class"),
            known.join(", ")
        )
    })?;
    let count = obj
        .get("count")
        .and_then(Value::as_u64)
        .with_context(|| format!("{} missing or not a count", field("count")))?;
    ensure!((1..=4).contains(&count), "{}: {count} is outside 1..=4", field("count"));
    let color = match obj.get("color") {
        None => None,
        Some(c) => {
            let name = c.as_str().with_context(|| format!("{} is not a string", field("color")))?;
            Some(Color::from_name(name).with_context(|| {
                format!("{}: colour {name:?} is not in the world palette", field("color"))
            })?)
        }
    };
    let position = match obj.get("position") {
        None => None,
        Some(p) => {
            let arr = p
                .as_array()
                .filter(|a| a.len() == 2)
                .with_context(|| format!("{} is not [relation, index]", field("position")))?;
            let name = arr[0]
                .as_str()
                .with_context(|| format!("{}[0] is not a string", field("position")))?;
            let rel = Relation::from_geneval_name(name)
                .with_context(|| format!("{}: unknown relation {name:?}", field("position")))?;
            let idx = arr[1]
                .as_u64()
                .with_context(|| format!("{}[1] is not an index", field("position")))?;
            Some((rel, idx))
        }
    };
    Ok((Requirement { shape, count: count as usize, color }, position))
}

/// Reads a GenEval metadata line whose classes and colours exist in the world. Errors name the
/// offending field.
pub fn from_geneval_json(v: &Value) -> anyhow::Result<GenEvalPrompt> {
    let tag =
        v.get("tag").and_then(Value::as_str).context("field `tag` missing or not a string")?;
    let category = Category::from_tag(tag)
        .with_context(|| format!("field `tag`: unknown category {tag:?}"))?;
    let entries = v
        .get("include")
        .and_then(Value::as_array)
        .context("field `include` missing or not an array")?;
    let inc: Vec<(Requirement, Option<(Relation, u64)>)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| parse_include(e, i))
        .collect::<anyhow::Result<_>>()?;
    let want = if matches!(category, Category::SingleObject | Category::Counting | Category::Colors)
    {
        1
    } else {
        2
    };
    ensure!(inc.len() == want, "field `include`: {tag} needs {want} entries, found {}", inc.len());
    let shape = |i: usize| inc[i].0.shape;
    let color = |i: usize| {
        inc[i].0.color.with_context(|| format!("include[{i}].color is required for {tag}"))
    };
    for (i, (r, _)) in inc.iter().enumerate() {
        ensure!(
            category == Category::Counting || r.count == 1,
            "include[{i}].count must be 1 for {tag}"
        );
    }
    if want == 2 {
        ensure!(shape(0) != shape(1), "include[1].class must differ from include[0].class");
    }
    let prompt = match category {
        Category::SingleObject => GenEvalPrompt::single_object(shape(0)),
        Category::TwoObject => GenEvalPrompt::two_object(shape(0), shape(1)),
        Category::Counting => {
            let n = inc[0].0.count;
            ensure!(n >= 2, "include[0].count: counting needs at least 2, got {n}");
            GenEvalPrompt::counting(shape(0), n)
        }
        Category::Colors => GenEvalPrompt::colors(shape(0), color(0)?),
        Category::Position => match inc[1].1 {
            Some((rel, 0)) => GenEvalPrompt::position(shape(1), rel, shape(0)),
            Some((_, idx)) => bail!("include[1].position: index {idx} must refer to include[0]"),
            None => bail!("include[1].position is required for position prompts"),
        },
        Category::ColorAttr => {
            GenEvalPrompt::color_attr((shape(0), color(0)?), (shape(1), color(1)?))
        }
    };
    if category != Category::Position {
        ensure!(
            inc.iter().all(|(_, p)| p.is_none()),
            "include[].position is only allowed for position prompts"
        );
    }
    Ok(prompt)
}

#[cfg(test)]
mod tests {
    use super::super::geneval::all_prompts;
    use super::*;

    #[test]
    fn every_prompt_round_trips() {
        for c in Category::ALL {
            for p in all_prompts(c) {
                let v = to_geneval_json(&p);
                assert_eq!(from_geneval_json(&v).unwrap(), p, "{v}");
                // Through text, as a JSONL line would travel.
                let line = serde_json::to_string(&v).unwrap();
                assert_eq!(from_geneval_json(&serde_json::from_str(&line).unwrap()).unwrap(), p);
            }
        }
    }

    #[test]
    fn json_follows_geneval_layout() {
        let p = GenEvalPrompt::position(Shape::Star, Relation::RightOf, Shape::Circle);
        assert_eq!(p.text, "a star to the right of a circle");
        assert_eq!(
            to_geneval_json(&p),
            json!({"tag": "position", "include": [{"class": "circle", "count": 1},
                {"class": "star", "count": 1, "position": ["right of", 0]}],
                "prompt": "a star to the right of a circle"})
        );
        assert_eq!(
            to_geneval_json(&GenEvalPrompt::counting(Shape::Square, 3)),
            json!({"tag": "counting", "include": [{"class": "square", "count": 3}],
                "exclude": [{"class": "square", "count": 4}], "prompt": "three squares"})
        );
        let original = json!({"tag": "colors", "include": [{"class": "diamond", "count": 1, "color": "pink"}],
            "prompt": "a photo of a pink diamond"});
        assert_eq!(from_geneval_json(&original).unwrap().text, "a pink diamond");
    }

    #[test]
    fn errors_name_the_field() {
        let err = |v: Value| format!("{:#}", from_geneval_json(&v).unwrap_err());
        assert!(err(json!({"include": []})).contains("`tag`"));
        assert!(err(json!({"tag": "texture", "include": []})).contains("`tag`"));
        assert!(err(json!({"tag": "colors"})).contains("`include`"));
        let dog = json!({"tag": "single_object", "include": [{"class": "dog", "count": 1}]});
        assert!(err(dog).contains("include[0].class"));
        let brown =
            json!({"tag": "colors", "include": [{"class": "star", "count": 1, "color": "brown"}]});
        assert!(err(brown).contains("include[0].color"));
        let no_color = json!({"tag": "color_attr", "include": [{"class": "star", "count": 1, "color": "red"},
            {"class": "circle", "count": 1}]});
        assert!(err(no_color).contains("include[1].color"));
        let no_pos = json!({"tag": "position", "include": [{"class": "star", "count": 1}, {"class": "circle", "count": 1}]});
        assert!(err(no_pos).contains("include[1].position"));
        let many = json!({"tag": "counting", "include": [{"class": "star", "count": 9}]});
        assert!(err(many).contains("include[0].count"));
    }
}
