//! Sharded token files with an index: what pre-tokenisation writes and training reads.
//!
//! Each shard is a safetensors file with `ids` (i32, all samples concatenated), `roles` (u8, one
//! per token: context, code, structure, target), `offsets` (i64, S+1 sample boundaries) and
//! `tasks` (u8, one per sample). `index.json` lists the shards and their counts.

use anyhow::{Context, Result, ensure};
use emu_tokenizer::checkpoint::{Checkpoint, save_atomic, write_atomic};
use emu_tokenizer::sequence::{Role, Sample, TurnLayout};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What a sample teaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Caption -> image.
    TextToImage,
    /// Image + question -> answer (captioning included).
    Understanding,
    /// Caption -> video.
    TextToVideo,
}

impl Task {
    fn to_u8(self) -> u8 {
        match self {
            Task::TextToImage => 0,
            Task::Understanding => 1,
            Task::TextToVideo => 2,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Task::TextToImage,
            1 => Task::Understanding,
            2 => Task::TextToVideo,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub samples: usize,
    pub tokens: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Index {
    pub shards: Vec<ShardInfo>,
    pub samples: usize,
    pub tokens: usize,
    /// Records that could not be used, with the reason (counted, never fatal).
    pub skipped: usize,
    /// How the chat samples' later turns are laid out; training masks them to match.
    #[serde(default)]
    pub turn_layout: TurnLayout,
    /// Whether text-to-image samples carry plans ([`Role::Plan`]): a model trained on them
    /// writes one before it draws, and its folder says so (`emu_model::Extensions`).
    #[serde(default)]
    pub plan: bool,
    /// Whether chat samples reason before they answer (`WorldData::reasoning`): a model trained
    /// on them does, and its folder says so.
    #[serde(default)]
    pub reasoning: bool,
}

/// Writes samples into shards of at most `per_shard` samples.
pub struct ShardWriter {
    dir: PathBuf,
    per_shard: usize,
    buf: Vec<(Sample, Task)>,
    index: Index,
}

impl ShardWriter {
    pub fn new(dir: &Path, per_shard: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            per_shard: per_shard.max(1),
            buf: Vec::new(),
            index: Index::default(),
        })
    }

    /// Records in the index that chat samples reason before they answer.
    pub fn with_reasoning(mut self, reasoning: bool) -> Self {
        self.index.reasoning = reasoning;
        self
    }

    /// Records in the index how the samples' chat turns are laid out.
    pub fn with_turn_layout(mut self, layout: TurnLayout) -> Self {
        self.index.turn_layout = layout;
        self
    }

    pub fn push(&mut self, sample: Sample, task: Task) -> Result<()> {
        self.index.plan |= sample.roles.contains(&Role::Plan);
        self.buf.push((sample, task));
        if self.buf.len() >= self.per_shard {
            self.flush()?;
        }
        Ok(())
    }

    pub fn skip(&mut self) {
        self.index.skipped += 1;
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<i32> = Vec::new();
        let mut roles: Vec<u8> = Vec::new();
        let mut offsets: Vec<i64> = vec![0];
        let mut tasks: Vec<u8> = Vec::new();
        for (s, t) in self.buf.drain(..) {
            ids.extend(s.ids.iter().map(|&i| i32::try_from(i).expect("token ids fit in i32")));
            roles.extend(s.roles.iter().map(|r| r.to_u8()));
            offsets.push(ids.len() as i64);
            tasks.push(t.to_u8());
        }
        let file = format!("shard-{:05}.safetensors", self.index.shards.len());
        let tensors = vec![
            ("ids".to_string(), Tensor::from_slice(&ids)),
            ("roles".to_string(), Tensor::from_slice(&roles)),
            ("offsets".to_string(), Tensor::from_slice(&offsets)),
            ("tasks".to_string(), Tensor::from_slice(&tasks)),
        ];
        save_atomic(&tensors, &self.dir.join(&file))?;
        let samples = tasks.len();
        self.index.samples += samples;
        self.index.tokens += ids.len();
        self.index.shards.push(ShardInfo { file, samples, tokens: ids.len() });
        Ok(())
    }

    pub fn finish(mut self) -> Result<Index> {
        self.flush()?;
        write_atomic(&self.dir.join("index.json"), &serde_json::to_string_pretty(&self.index)?)?;
        Ok(self.index)
    }
}

/// Every sample of a token folder, in memory.
pub struct TokenStore {
    pub samples: Vec<(Sample, Task)>,
    pub index: Index,
}

impl TokenStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let ipath = dir.join("index.json");
        let index: Index = serde_json::from_str(
            &std::fs::read_to_string(&ipath)
                .with_context(|| format!("reading {}", ipath.display()))?,
        )
        .with_context(|| format!("{} is not a token index", ipath.display()))?;
        let mut samples = Vec::with_capacity(index.samples);
        for shard in &index.shards {
            let path = dir.join(&shard.file);
            let ck = Checkpoint::open(&path)?;
            let get = |n: &str| {
                ck.tensor(n, Device::Cpu)
                    .with_context(|| format!("{}: missing `{n}`", path.display()))
            };
            let ids: Vec<i32> = Vec::try_from(get("ids")?.to_kind(Kind::Int))?;
            let roles: Vec<u8> = Vec::try_from(get("roles")?)?;
            let offsets: Vec<i64> = Vec::try_from(get("offsets")?)?;
            let tasks: Vec<u8> = Vec::try_from(get("tasks")?)?;
            ensure!(
                ids.len() == roles.len() && offsets.len() == tasks.len() + 1,
                "{}: inconsistent arrays",
                path.display()
            );
            for (i, w) in offsets.windows(2).enumerate() {
                let (a, b) = (w[0] as usize, w[1] as usize);
                ensure!(a <= b && b <= ids.len(), "{}: bad offsets", path.display());
                let roles = roles[a..b]
                    .iter()
                    .map(|&r| {
                        Role::from_u8(r)
                            .with_context(|| format!("{}: bad role {r}", path.display()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let task = Task::from_u8(tasks[i])
                    .with_context(|| format!("{}: bad task {}", path.display(), tasks[i]))?;
                samples.push((
                    Sample { ids: ids[a..b].iter().map(|&x| x as i64).collect(), roles },
                    task,
                ));
            }
        }
        ensure!(
            samples.len() == index.samples,
            "{}: index says {} samples, shards hold {}",
            dir.display(),
            index.samples,
            samples.len()
        );
        Ok(TokenStore { samples, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_across_shard_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), 2).unwrap();
        let mk = |n: i64| Sample {
            ids: (0..n).collect(),
            roles: (0..n).map(|i| if i % 2 == 0 { Role::Code } else { Role::Target }).collect(),
        };
        for n in 1..=5 {
            w.push(mk(n), if n % 2 == 0 { Task::Understanding } else { Task::TextToImage })
                .unwrap();
        }
        w.skip();
        let idx = w.finish().unwrap();
        assert_eq!((idx.shards.len(), idx.samples, idx.tokens, idx.skipped), (3, 5, 15, 1));
        let store = TokenStore::open(dir.path()).unwrap();
        for (n, (s, t)) in (1..=5).zip(&store.samples) {
            assert_eq!(s, &mk(n));
            assert_eq!(*t, if n % 2 == 0 { Task::Understanding } else { Task::TextToImage });
        }
    }
}
