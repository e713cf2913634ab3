//! Matrix-vector products of a decode step split by output rows over CPU threads. MKL's sgemv
//! runs on one core whatever the intra-op thread count (measured on the 2-core machine: a
//! batch-1 decode step of smollm2-135m takes 39.4 ms with 1 thread and 40.0 ms with 2, 34 ms of
//! it in the projections, i.e. 16 GB/s of weights against 46-59 GB/s that two cores read), so at
//! small batches each projection's rows are cut into one contiguous block per thread and the blocks
//! run at once: the calling thread takes the first, long-lived workers the others. Every output
//! element is still one dot product over the whole input, computed by the same kernel.
//!
//! While a split forward runs, every thread involved, the caller included, runs OpenMP and MKL
//! on one thread (per-thread settings, so the process-wide count other threads start from is
//! untouched): an op that opened an OpenMP team (the CPU attention kernel does, even at batch 1)
//! would wait for the core another block runs on, and with libgomp's default spin-waiting the
//! team's idle thread takes that core from the worker (measured: 4x slower than unsplit).
//! Without these symbols (a libtorch without MKL or libgomp) nothing is split.
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvError, Sender, TryRecvError};
use tch::Tensor;

use super::layers::Linear;

/// `int f(int)`: MKL_Set_Num_Threads_Local (mkl_service.h; the lower-case names are the Fortran
/// ones, which take a pointer) sets the calling thread's MKL thread count (0 = the global one)
/// and returns the previous value.
type SetThreads = unsafe extern "C" fn(libc::c_int) -> libc::c_int;
/// `void omp_set_num_threads(int)` and `int omp_get_max_threads(void)`: the calling thread's
/// OpenMP team size.
type OmpSet = unsafe extern "C" fn(libc::c_int);
type OmpGet = unsafe extern "C" fn() -> libc::c_int;

fn symbol(name: &std::ffi::CStr) -> Option<*mut libc::c_void> {
    // SAFETY: dlsym with a NUL-terminated name on the already loaded libraries.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!f.is_null()).then_some(f)
}

/// The per-thread thread-count setters of MKL and libgomp, found in the loaded libtorch.
#[derive(Clone, Copy)]
struct ThreadControls {
    mkl_local: SetThreads,
    omp_set: OmpSet,
    omp_get: OmpGet,
}

impl ThreadControls {
    fn find() -> Option<ThreadControls> {
        let (mkl, set, get) = (symbol(c"MKL_Set_Num_Threads_Local")?, symbol(c"omp_set_num_threads")?, symbol(c"omp_get_max_threads")?);
        // SAFETY: each is the address of the library function of the documented signature above.
        unsafe {
            Some(ThreadControls {
                mkl_local: std::mem::transmute::<*mut libc::c_void, SetThreads>(mkl),
                omp_set: std::mem::transmute::<*mut libc::c_void, OmpSet>(set),
                omp_get: std::mem::transmute::<*mut libc::c_void, OmpGet>(get),
            })
        }
    }

    /// Runs `f` with OpenMP and MKL on one thread on this thread, then restores both.
    fn single_threaded<T>(self, f: impl FnOnce() -> T) -> T {
        // SAFETY: the getter reads and both setters write per-thread values only.
        let (mkl, omp) = unsafe {
            let omp = (self.omp_get)();
            (self.omp_set)(1);
            ((self.mkl_local)(1), omp)
        };
        let out = f();
        // SAFETY: as above.
        unsafe {
            (self.mkl_local)(mkl);
            (self.omp_set)(omp);
        }
        out
    }
}

/// `x` and a block of a projection's rows: one worker's share of a projection.
struct Job {
    x: Tensor,
    rows: Linear,
}

struct Worker {
    jobs: Sender<Job>,
    results: Receiver<Tensor>,
    handle: Option<JoinHandle<()>>,
}

pub struct RowSplit {
    controls: ThreadControls,
    /// Locked for the length of one projection: callers on other threads (two engines on one
    /// model, tests) that find it busy compute unsplit instead of waiting.
    workers: Mutex<Vec<Worker>>,
}

/// Inputs of at most this many rows are split; larger ones are matrix products that MKL already
/// spreads over its threads. Measured on smollm2-135m, 2 threads, engine decode step: batch 1
/// 40 -> 23 ms, batch 6 70 -> 55 ms, batch 24 95 -> 127 ms if it were split (so it is not).
const MAX_ROWS: i64 = 8;

/// Threads a projection is split over at most: a few cores already saturate the memory bus, and
/// each more block is one more hand-off per projection (only 2 were measured here).
const MAX_THREADS: usize = 4;

impl RowSplit {
    /// A splitter over `threads` threads (the caller's included, at most `MAX_THREADS`); None
    /// below 2.
    pub fn new(threads: usize) -> Option<RowSplit> {
        let threads = threads.min(MAX_THREADS);
        let controls = ThreadControls::find().filter(|_| threads >= 2)?;
        Some(RowSplit { controls, workers: Mutex::new((1..threads).map(|_| spawn_worker(controls)).collect()) })
    }

    /// Threads taking part, the caller's included.
    pub fn threads(&self) -> usize {
        self.workers.lock().map_or(1, |w| w.len()) + 1
    }

    /// Whether a forward over `rows` positions (batch x new tokens) splits its projections.
    pub fn applies(rows: i64, x: &Tensor) -> bool {
        rows <= MAX_ROWS && x.device() == tch::Device::Cpu && !x.requires_grad()
    }

    /// Runs a whole split forward (`f`) with this thread single-threaded (see the module note).
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        self.controls.single_threaded(f)
    }

    /// `layer.forward(x)`, split when `x` has at most `MAX_ROWS` rows on the CPU outside autograd.
    pub fn forward(&self, layer: &Linear, x: &Tensor) -> Tensor {
        let rows = x.numel() as i64 / x.size().last().copied().unwrap_or(1).max(1);
        if !Self::applies(rows, x) || layer.weight.requires_grad() {
            return layer.forward(x);
        }
        let Ok(workers) = self.workers.try_lock() else {
            return layer.forward(x);
        };
        let out = layer.weight.size()[0];
        let parts = workers.len() as i64 + 1;
        let block = (out + parts - 1) / parts;
        let slice = |i: i64| layer.rows(i * block, block.min(out - i * block));
        for (i, w) in workers.iter().enumerate() {
            // A worker that died (its channel closed) leaves its block to the caller below.
            let _ = w.jobs.send(Job { x: x.shallow_clone(), rows: slice(i as i64 + 1) });
        }
        let first = slice(0);
        let mut outputs = vec![self.controls.single_threaded(|| first.forward(x))];
        for (i, w) in workers.iter().enumerate() {
            let result = recv_spinning(&w.results).unwrap_or_else(|_| slice(i as i64 + 1).forward(x));
            outputs.push(result);
        }
        Tensor::cat(&outputs, -1)
    }
}

fn spawn_worker(controls: ThreadControls) -> Worker {
    let (jobs, job_rx) = bounded::<Job>(1);
    let (result_tx, results) = bounded::<Tensor>(1);
    let handle = std::thread::Builder::new()
        .name("row-split".into())
        .spawn(move || {
            // One thread for OpenMP and MKL here for good, and no autograd: the blocks are
            // inference-only by the eligibility check.
            let _guard = tch::no_grad_guard();
            controls.single_threaded(|| {
                while let Ok(job) = recv_spinning(&job_rx) {
                    if result_tx.send(job.rows.forward(&job.x)).is_err() {
                        break;
                    }
                }
            });
        })
        .ok();
    Worker { jobs, results, handle }
}

/// How long a receiver spins before it sleeps. A decode step sends a projection every 0.1-0.3 ms;
/// waking a sleeping thread costs tens of microseconds each time, a third of the gain at batch 1.
/// Between steps and when the engine idles, the threads sleep.
const SPIN: Duration = Duration::from_micros(500);

fn recv_spinning<T>(rx: &Receiver<T>) -> Result<T, RecvError> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) if start.elapsed() < SPIN => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv(),
        }
    }
}

impl Drop for RowSplit {
    fn drop(&mut self) {
        let workers = std::mem::take(self.workers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for mut w in workers {
            drop(w.jobs);
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}
