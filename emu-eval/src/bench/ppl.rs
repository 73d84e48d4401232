//! `ppl`: held-out loss per modality, in nats per token. Images: the visual codes of
//! text-to-image samples; text: the answers of understanding samples (after the scene's layout,
//! or what they search for placed, for a model that reasons first); video: the codes of
//! text-to-video samples. Held-out world scenes use seeds no training set uses. Codes are the
//! generator's business and answers the chat model's, so each loss is taken on its own model.
//!
//! Shapes: L tokens per sample.

use super::report::BenchResult;
use super::video::{FPS, videos};
use super::{BenchOptions, Models};
use crate::world::{self, Scene};
use anyhow::Result;
use emu_model::pipeline::Emu3;
use emu_tokenizer::sequence::{Role, Sample, Weighting};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

fn loss(model: &Emu3, samples: &[Sample], w: Weighting) -> Result<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        let ids = Tensor::from_slice(&s.ids).view([1, -1]).to_device(model.lm.vs.device());
        let weights = Tensor::from_slice(&s.weights(w)).view([1, -1]).to_device(ids.device());
        let out =
            tch::no_grad(|| model.lm.forward_train(&ids, &ids, Some(&weights), None, false, false));
        num += out.loss.to_device(Device::Cpu).double_value(&[]) * out.weight_sum;
        den += out.weight_sum;
    }
    Ok(num / den.max(1e-9))
}

pub fn run(models: Models<'_>, opts: &BenchOptions) -> Result<BenchResult> {
    let start = std::time::Instant::now();
    let model = models.generator;
    let (h, w) = opts.grid(model)?;
    let (ph, _) = model.pixels(h, w)?;
    let fmt = model.format();
    let scenes: Vec<(u64, Scene)> =
        (0..opts.vqa_images as u64).map(|s| (200_000 + s, Scene::random(200_000 + s))).collect();
    let images: Vec<_> = scenes.iter().map(|(_, s)| world::render(s, ph as u32)).collect();
    let codes = model.encode_many(&images, h, w)?;
    let mut t2i = Vec::new();
    let mut blank = Vec::new();
    // A planning generator is judged in its own format: the codes after caption and plan, the
    // plan being the scene's true layout, as in training.
    let plans = model.extensions.plan;
    for ((seed, s), c) in scenes.iter().zip(&codes) {
        let caption = world::caption(s, *seed);
        t2i.push(if plans {
            let mut planned = fmt.t2i_planned_sample(&caption, &world::layout(s), c, h, w)?;
            // Only the codes are judged here: the plan is given, as context.
            for r in planned.roles.iter_mut().filter(|r| **r == Role::Plan) {
                *r = Role::Context;
            }
            planned
        } else {
            fmt.t2i_sample(&caption, c, h, w)?
        });
        blank.push(fmt.t2i_sample("", c, h, w)?);
    }
    // The chat model sees the images through its own tokenizer (a run's two models share one).
    let (ch, cw) = opts.grid(models.chat)?;
    let own_codes;
    let chat_codes = if std::ptr::eq(models.chat, model) {
        &codes
    } else {
        own_codes = models.chat.encode_many(&images, ch, cw)?;
        &own_codes
    };
    let chat_fmt = models.chat.format();
    // A chat model that reasons first is judged on the answers it was taught to give: the
    // scene's layout (or what the question searches for, placed), then the answer.
    let ext = models.chat.extensions;
    let mut chat = Vec::new();
    for ((seed, s), c) in scenes.iter().zip(chat_codes) {
        for q in world::scene_questions(s, *seed).into_iter().take(2) {
            let places = world::placed_first(&q.question, &s.objects).filter(|_| ext.place_first);
            let answer = if ext.reasoning {
                world::reasoned_answer(&world::layout(s), &q.answer)
            } else if let Some(places) = places {
                world::reasoned_answer(&places, &q.answer)
            } else {
                q.answer
            };
            chat.push(chat_fmt.chat_sample(c, ch, cw, &q.question, &answer)?);
        }
    }
    let t = model.vq.as_ref().map_or(4, |v| v.config.temporal_downsample_factor) as u32;
    let mut t2v = Vec::new();
    for (seed, v) in
        videos(300_000..301_000, 2 * t, false).into_iter().take(opts.video_prompts.max(2))
    {
        let frames = world::render_video(&v, ph as u32);
        let clip = model.encode_frames(&frames, h, w)?;
        t2v.push(fmt.t2v_sample(&world::video_caption(&v, seed), &clip, h, w, FPS)?);
    }
    let mut metrics = BTreeMap::new();
    let loss_image = loss(model, &t2i, Weighting::VisionOnly)?;
    metrics.insert("loss_image".into(), loss_image);
    // What the caption is worth: the same codes after an empty caption (the CFG branch).
    metrics.insert("caption_gain".into(), loss(model, &blank, Weighting::VisionOnly)? - loss_image);
    metrics.insert("loss_text".into(), loss(models.chat, &chat, Weighting::TextOnly)?);
    metrics.insert("loss_video".into(), loss(model, &t2v, Weighting::VisionOnly)?);
    Ok(BenchResult {
        name: "ppl".into(),
        protocol: format!(
            "Held-out next-token loss (nats/token): loss_image over the codes of {} text-to-image samples{}, caption_gain \
             = how much lower that is than after an empty caption, loss_text over \
             the answers of {} understanding samples{}, loss_video over the codes of {} text-to-video samples (world seeds \
             200000+ and 300000+).",
            t2i.len(),
            if plans {
                " (after caption and plan: this generator plans, and its plan is the scene's layout)"
            } else {
                ""
            },
            chat.len(),
            if ext.reasoning {
                " (each after the scene's layout, as this model reasons)"
            } else if ext.place_first {
                " (those that search the image after what they search for, placed, as this \
                 model answers)"
            } else {
                ""
            },
            t2v.len()
        ),
        metrics,
        details: serde_json::Value::Null,
        samples: vec![],
        seconds: start.elapsed().as_secs_f64(),
    })
}
