//! Helpers shared by the training tests: a synthetic token store, companions and configs.

use emu_model::Emu3Config;
use emu_tokenizer::sequence::{Role, Sample};
use emu_tokenizer::text::TextTokenizer;
use emu_train::checkpoint::Companions;
use emu_train::data::shards::{Index, Task, TokenStore};
use emu_train::lm::LmTrainConfig;
use emu_train::optim::AdamWConfig;
use std::path::Path;

pub fn store(n: usize, seed: u64) -> TokenStore {
    let mut samples = Vec::new();
    let mut x = seed;
    for i in 0..n {
        let len = 6 + i % 5;
        let ids: Vec<i64> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                3 + ((x >> 33) % 60) as i64
            })
            .collect();
        let roles = (0..len).map(|j| if j % 3 == 0 { Role::Code } else { Role::Target }).collect();
        samples.push((
            Sample { ids, roles },
            if i % 2 == 0 { Task::TextToImage } else { Task::Understanding },
        ));
    }
    TokenStore { samples, index: Index::default() }
}

pub fn companions(dir: &Path) -> Companions {
    let tok = TextTokenizer::train_bpe(&["a b c".to_string()], 300, &[]).unwrap();
    let p = dir.join("tok.json");
    tok.save(&p).unwrap();
    Companions { tokenizer: p, vision_tokenizer: None, extensions: Default::default() }
}

pub fn config(steps: i64) -> LmTrainConfig {
    LmTrainConfig {
        steps,
        batch_size: 4,
        micro_batch: 2,
        max_len: 24,
        optim: AdamWConfig { lr: 3e-3, ..Default::default() },
        warmup: 2,
        min_lr: 3e-4,
        log_every: 1,
        checkpoint_every: 0,
        ..Default::default()
    }
}

pub fn model_cfg() -> Emu3Config {
    Emu3Config {
        vocab_size: 64,
        pad_token_id: 0,
        bos_token_id: 1,
        eos_token_id: 2,
        eol_token_id: 3,
        img_token_id: 4,
        boi_token_id: 5,
        eoi_token_id: 6,
        eof_token_id: 7,
        ..Emu3Config::tiny()
    }
}
