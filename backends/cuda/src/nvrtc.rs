//! NVRTC, loaded at run time, compiles printed kernels ahead of time: a cubin for the target GPU,
//! PTX for the driver's JIT as a fallback, and the ptxas resource report that tests snapshot.
//!
//! The library is opened by full path, searched in `$VL3C_CUDA_HOME`, then in the cache directory
//! that `tools/cuda/install-nvrtc.sh` fills, then by the system loader. Opening by name alone
//! (cudarc's way) honours only the `LD_LIBRARY_PATH` the process started with, so a library
//! installed by the script would be invisible without restarting under a changed environment.

use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};

/// The NVRTC release `tools/cuda/install-nvrtc.sh` installs: 13.0, because PTX must be no newer
/// than the GPU machine's driver (CUDA 13.0) for its JIT to accept it.
pub const PINNED_VERSION: &str = "13.0.88";

const INSTALL_COMMAND: &str = "tools/cuda/install-nvrtc.sh";

/// Library file names, newest first.
const LIBRARY_NAMES: [&str; 3] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

/// Where, below an install root, the library and the headers may live: the wheels' layout (what
/// the install script produces, and a pip site-packages), then a CUDA toolkit's.
const LIBRARY_SUBDIRS: [&str; 4] = ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "lib64", "lib"];

/// A GPU architecture kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sm {
    Sm80,
    Sm90,
}

impl Sm {
    pub const ALL: [Sm; 2] = [Sm::Sm80, Sm::Sm90];

    /// `"80"` or `"90"` (also accepts `"sm_90"`).
    pub fn parse(text: &str) -> Option<Sm> {
        match text.trim().trim_start_matches("sm_") {
            "80" => Some(Sm::Sm80),
            "90" => Some(Sm::Sm90),
            _ => None,
        }
    }

    /// The real architecture a cubin is built for: `sm_90`.
    pub fn name(self) -> &'static str {
        match self {
            Sm::Sm80 => "sm_80",
            Sm::Sm90 => "sm_90",
        }
    }

    /// The virtual architecture of the PTX fallback: `compute_90`.
    pub fn virtual_name(self) -> &'static str {
        match self {
            Sm::Sm80 => "compute_80",
            Sm::Sm90 => "compute_90",
        }
    }

    /// The most shared memory one block may use (static and dynamic together), in bytes.
    pub fn max_shared_bytes_per_block(self) -> u32 {
        match self {
            Sm::Sm80 => 163 * 1024,
            Sm::Sm90 => 227 * 1024,
        }
    }
}

impl fmt::Display for Sm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    /// No usable NVRTC (or no `cuda_bf16.h` beside it). One line that says how to fix it.
    #[error("NVRTC not installed ({reason}): run {INSTALL_COMMAND}")]
    NotInstalled { reason: String },
    #[error("NVRTC at {path} lacks {symbol}: {message}")]
    MissingSymbol {
        path: String,
        symbol: &'static str,
        message: String,
    },
    /// The source did not compile; `log` is NVRTC's whole log.
    #[error("NVRTC could not compile {program} for {arch}:\n{log}")]
    Compile {
        program: String,
        arch: &'static str,
        log: String,
    },
    #[error("NVRTC {call} failed: {message}")]
    Api { call: &'static str, message: String },
    #[error("source for {program} contains a NUL byte")]
    NulInSource { program: String },
}

/// `nvrtcResult`; 0 is success.
type NvrtcResult = c_int;
type Program = *mut c_void;

/// The entry points used, resolved once at load.
struct Api {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> NvrtcResult,
    get_error_string: unsafe extern "C" fn(NvrtcResult) -> *const c_char,
    create_program: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcResult,
    compile_program: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> NvrtcResult,
    destroy_program: unsafe extern "C" fn(*mut Program) -> NvrtcResult,
    get_program_log_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    get_program_log: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    get_cubin_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    get_cubin: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    get_ptx_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    get_ptx: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
}

/// A loaded NVRTC and the include directory holding `cuda_bf16.h` for it.
pub struct Nvrtc {
    api: Api,
    library_path: PathBuf,
    include_dir: PathBuf,
    /// Keeps the entry points in `api` valid; dropped last.
    _library: Library,
    /// NVRTC opens its builtins library by name when it compiles, which only the loader's start-up
    /// search path would find; loaded here by full path first, the loader reuses it.
    _builtins: Option<Library>,
}

/// What one compile produced.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// For the `sm_XX` the compile was asked for.
    pub cubin: Vec<u8>,
    /// For `compute_XX`: what the driver JIT-compiles where the cubin does not load.
    pub ptx: String,
    /// NVRTC's log of the cubin compile, ptxas' `-v` lines included.
    pub log: String,
    /// One per kernel, in the order ptxas reported them.
    pub reports: Vec<PtxasReport>,
}

/// ptxas' resource usage of one kernel (`--ptxas-options=-v`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PtxasReport {
    pub kernel: String,
    pub registers: u32,
    pub barriers: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    /// Static shared memory; dynamic shared memory is sized at launch and not counted.
    pub shared_bytes: u32,
    /// All constant banks together (kernel parameters live in bank 0).
    pub constant_bytes: u32,
}

impl Nvrtc {
    /// Finds and opens NVRTC: `$VL3C_CUDA_HOME`, the install script's cache directory, then the
    /// system loader.
    pub fn load() -> Result<Nvrtc, NvrtcError> {
        let mut roots = Vec::new();
        if let Some(home) = std::env::var_os("VL3C_CUDA_HOME").filter(|h| !h.is_empty()) {
            roots.push(PathBuf::from(home));
        }
        if let Some(cache) = default_install_dir() {
            roots.push(cache);
        }
        if let Some(home) = std::env::var_os("CUDA_HOME").filter(|h| !h.is_empty()) {
            roots.push(PathBuf::from(home));
        }
        match Self::load_from_roots(&roots) {
            Err(NvrtcError::NotInstalled { reason }) => {
                Self::load_by_system_loader().map_err(|_| NvrtcError::NotInstalled { reason })
            }
            other => other,
        }
    }

    /// Opens NVRTC from the first of `roots` that holds it (no system-loader fallback).
    pub fn load_from_roots(roots: &[PathBuf]) -> Result<Nvrtc, NvrtcError> {
        for root in roots {
            for subdir in LIBRARY_SUBDIRS {
                for name in LIBRARY_NAMES {
                    let path = root.join(subdir).join(name);
                    if path.is_file() {
                        return Self::open(&path);
                    }
                }
            }
        }
        let searched: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        Err(NvrtcError::NotInstalled {
            reason: format!("no libnvrtc.so under {}", searched.join(", ")),
        })
    }

    fn load_by_system_loader() -> Result<Nvrtc, NvrtcError> {
        for name in LIBRARY_NAMES {
            // SAFETY: loading NVRTC runs only its own initialisers.
            if let Ok(library) = unsafe { Library::new(name) } {
                // The loader does not say where it found the library; the process' mappings do.
                let path = mapped_path_of("libnvrtc").unwrap_or_else(|| PathBuf::from(name));
                drop(library);
                return Self::open(&path);
            }
        }
        Err(NvrtcError::NotInstalled {
            reason: "the system loader finds no libnvrtc.so".into(),
        })
    }

    fn open(path: &Path) -> Result<Nvrtc, NvrtcError> {
        let include_dir = include_dir_for(path).ok_or_else(|| NvrtcError::NotInstalled {
            reason: format!("no cuda_bf16.h next to {}", path.display()),
        })?;
        let builtins =
            match builtins_beside(path) {
                // SAFETY: as above; it stays loaded as long as `Nvrtc` holds it.
                Some(builtins) => Some(unsafe { Library::new(&builtins) }.map_err(|e| {
                    NvrtcError::NotInstalled {
                        reason: format!("{} does not load: {e}", builtins.display()),
                    }
                })?),
                None => None,
            };
        // SAFETY: as above; the library stays loaded as long as `Nvrtc` holds it.
        let library = unsafe { Library::new(path) }.map_err(|e| NvrtcError::NotInstalled {
            reason: format!("{} does not load: {e}", path.display()),
        })?;
        let api = resolve_api(&library, path)?;
        Ok(Nvrtc {
            api,
            library_path: path.to_path_buf(),
            include_dir,
            _library: library,
            _builtins: builtins,
        })
    }

    /// NVRTC's (major, minor).
    pub fn version(&self) -> (i32, i32) {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two valid out-pointers.
        unsafe { (self.api.version)(&mut major, &mut minor) };
        (major, minor)
    }

    pub fn library_path(&self) -> &Path {
        &self.library_path
    }

    pub fn include_dir(&self) -> &Path {
        &self.include_dir
    }

    /// Compiles one translation unit for `sm`: a cubin with ptxas' report, and PTX for the
    /// virtual architecture.
    pub fn compile(
        &self,
        source: &str,
        program_name: &str,
        sm: Sm,
    ) -> Result<Compiled, NvrtcError> {
        let cubin_run = self.run(source, program_name, sm.name(), true)?;
        let ptx_run = self.run(source, program_name, sm.virtual_name(), false)?;
        let reports = parse_ptxas_report(&cubin_run.log);
        Ok(Compiled {
            cubin: cubin_run.cubin,
            ptx: String::from_utf8_lossy(&ptx_run.ptx)
                .trim_end_matches('\0')
                .to_string(),
            log: cubin_run.log,
            reports,
        })
    }

    fn options(&self, arch: &str, verbose_ptxas: bool) -> Vec<String> {
        let mut options = vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
            // The emulator rounds every multiply and add: contracting them into FMAs would make the
            // GPU's results differ from it. Kernels that want an FMA say `Expr::Fma`.
            "--fmad=false".to_string(),
            "-lineinfo".to_string(),
            format!("--include-path={}", self.include_dir.display()),
        ];
        if verbose_ptxas {
            options.push("--ptxas-options=-v".to_string());
        }
        options
    }

    fn run(
        &self,
        source: &str,
        program_name: &str,
        arch: &'static str,
        real_arch: bool,
    ) -> Result<RunOutput, NvrtcError> {
        let nul = || NvrtcError::NulInSource {
            program: program_name.to_string(),
        };
        let source_c = CString::new(source).map_err(|_| nul())?;
        let name_c = CString::new(program_name).map_err(|_| nul())?;
        let options: Vec<CString> = self
            .options(arch, real_arch)
            .into_iter()
            .map(|o| CString::new(o).map_err(|_| nul()))
            .collect::<Result<_, _>>()?;
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();

        let mut program: Program = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings, no headers; `program` is destroyed below.
        let created = unsafe {
            (self.api.create_program)(
                &mut program,
                source_c.as_ptr(),
                name_c.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        self.check("nvrtcCreateProgram", created)?;
        let guard = ProgramGuard {
            api: &self.api,
            program,
        };

        // SAFETY: the option pointers outlive the call.
        let compiled = unsafe {
            (self.api.compile_program)(
                guard.program,
                option_ptrs.len() as c_int,
                option_ptrs.as_ptr(),
            )
        };
        let log = self.read_bytes(
            guard.program,
            "nvrtcGetProgramLog",
            self.api.get_program_log_size,
            self.api.get_program_log,
        )?;
        let log = String::from_utf8_lossy(&log)
            .trim_end_matches('\0')
            .to_string();
        if compiled != 0 {
            return Err(NvrtcError::Compile {
                program: program_name.to_string(),
                arch,
                log,
            });
        }
        let (cubin, ptx) = if real_arch {
            (
                self.read_bytes(
                    guard.program,
                    "nvrtcGetCUBIN",
                    self.api.get_cubin_size,
                    self.api.get_cubin,
                )?,
                Vec::new(),
            )
        } else {
            (
                Vec::new(),
                self.read_bytes(
                    guard.program,
                    "nvrtcGetPTX",
                    self.api.get_ptx_size,
                    self.api.get_ptx,
                )?,
            )
        };
        Ok(RunOutput { cubin, ptx, log })
    }

    fn read_bytes(
        &self,
        program: Program,
        call: &'static str,
        size_of: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
        read: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    ) -> Result<Vec<u8>, NvrtcError> {
        let mut size = 0usize;
        // SAFETY: a live program and a valid out-pointer.
        self.check(call, unsafe { size_of(program, &mut size) })?;
        let mut bytes = vec![0u8; size];
        if size > 0 {
            // SAFETY: `bytes` has the size NVRTC just reported.
            self.check(call, unsafe { read(program, bytes.as_mut_ptr().cast()) })?;
        }
        Ok(bytes)
    }

    fn check(&self, call: &'static str, result: NvrtcResult) -> Result<(), NvrtcError> {
        if result == 0 {
            return Ok(());
        }
        // SAFETY: NVRTC returns a static string for any result code.
        let text = unsafe { (self.api.get_error_string)(result) };
        let message = if text.is_null() {
            format!("error {result}")
        } else {
            // SAFETY: non-null, NUL-terminated, static.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        Err(NvrtcError::Api { call, message })
    }
}

struct RunOutput {
    cubin: Vec<u8>,
    ptx: Vec<u8>,
    log: String,
}

struct ProgramGuard<'a> {
    api: &'a Api,
    program: Program,
}

impl Drop for ProgramGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed once.
        unsafe { (self.api.destroy_program)(&mut self.program) };
    }
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/vl3c/cuda/<PINNED_VERSION>`, where the install script puts it.
pub fn default_install_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|c| !c.is_empty()) {
        Some(cache) => PathBuf::from(cache),
        None => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(cache.join("vl3c").join("cuda").join(PINNED_VERSION))
}

/// The `include` directory beside the library's `lib` (or `lib64`) that holds `cuda_bf16.h`: the
/// runtime wheel unpacks next to the NVRTC wheel, a toolkit keeps both under one root.
fn include_dir_for(library: &Path) -> Option<PathBuf> {
    let lib_dir = library.parent()?;
    let mut candidates = vec![lib_dir.parent()?.join("include")];
    // pip installs each wheel under its own nvidia/<package>/ directory.
    if let Some(nvidia) = lib_dir.parent().and_then(Path::parent) {
        candidates.push(nvidia.join("cuda_runtime").join("include"));
        candidates.push(nvidia.join("cu13").join("include"));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("cuda_bf16.h").is_file())
}

/// `libnvrtc-builtins.so.<major>.<minor>` next to NVRTC (not the `.alt` variant).
fn builtins_beside(library: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(library.parent()?)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
        })
        .collect();
    // The most specific name (`.so.13.0` over `.so`) is what NVRTC asks for.
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// The file a loaded shared object whose name contains `needle` was mapped from.
fn mapped_path_of(needle: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|file| file.contains(needle) && !file.contains("builtins"))
        })
        .map(PathBuf::from)
}

fn resolve_api(library: &Library, path: &Path) -> Result<Api, NvrtcError> {
    fn symbol<T: Copy>(
        library: &Library,
        path: &Path,
        name: &'static str,
    ) -> Result<T, NvrtcError> {
        // SAFETY: each symbol is given the signature of its declaration in nvrtc.h.
        unsafe { library.get::<T>(name.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| NvrtcError::MissingSymbol {
                path: path.display().to_string(),
                symbol: name,
                message: e.to_string(),
            })
    }
    Ok(Api {
        version: symbol(library, path, "nvrtcVersion")?,
        get_error_string: symbol(library, path, "nvrtcGetErrorString")?,
        create_program: symbol(library, path, "nvrtcCreateProgram")?,
        compile_program: symbol(library, path, "nvrtcCompileProgram")?,
        destroy_program: symbol(library, path, "nvrtcDestroyProgram")?,
        get_program_log_size: symbol(library, path, "nvrtcGetProgramLogSize")?,
        get_program_log: symbol(library, path, "nvrtcGetProgramLog")?,
        get_cubin_size: symbol(library, path, "nvrtcGetCUBINSize")?,
        get_cubin: symbol(library, path, "nvrtcGetCUBIN")?,
        get_ptx_size: symbol(library, path, "nvrtcGetPTXSize")?,
        get_ptx: symbol(library, path, "nvrtcGetPTX")?,
    })
}

/// Reads ptxas' `-v` lines (as NVRTC 13.0 writes them; sm_90 reports no constant banks):
/// ```text
/// ptxas info    : Compiling entry function 'rms_norm' for 'sm_80'
/// ptxas info    : Function properties for rms_norm
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 24 registers, used 1 barriers, 1024 bytes smem, 384 bytes cmem[0]
/// ```
pub fn parse_ptxas_report(log: &str) -> Vec<PtxasReport> {
    let mut reports: Vec<PtxasReport> = Vec::new();
    for line in log.lines() {
        if let Some(at) = line.find("Compiling entry function") {
            let kernel = line[at..]
                .split('\'')
                .nth(1)
                .unwrap_or_default()
                .to_string();
            reports.push(PtxasReport {
                kernel,
                ..PtxasReport::default()
            });
            continue;
        }
        if line.contains("Function properties for") {
            continue;
        }
        let Some(report) = reports.last_mut() else {
            continue;
        };
        for item in line.split(',') {
            let words: Vec<&str> = item.split_whitespace().collect();
            let Some(at) = words.iter().position(|w| w.parse::<u32>().is_ok()) else {
                continue;
            };
            let value: u32 = words[at].parse().expect("just parsed");
            match &words[at + 1..] {
                ["registers"] => report.registers = value,
                ["barriers"] => report.barriers = value,
                ["bytes", "stack", "frame"] => report.stack_bytes = value,
                ["bytes", "spill", "stores"] => report.spill_stores = value,
                ["bytes", "spill", "loads"] => report.spill_loads = value,
                ["bytes", "smem"] => report.shared_bytes = value,
                ["bytes", bank] if bank.starts_with("cmem[") => report.constant_bytes += value,
                _ => {}
            }
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_installed_is_one_line_naming_the_install_script() {
        let empty = std::env::temp_dir().join(format!("vl3c-nvrtc-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let error = Nvrtc::load_from_roots(std::slice::from_ref(&empty))
            .err()
            .expect("an empty directory holds no NVRTC");
        std::fs::remove_dir_all(&empty).unwrap();
        let text = error.to_string();
        assert!(matches!(error, NvrtcError::NotInstalled { .. }), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with("run tools/cuda/install-nvrtc.sh"), "{text}");
    }

    #[test]
    fn sm_parses_and_names() {
        assert_eq!(Sm::parse("80"), Some(Sm::Sm80));
        assert_eq!(Sm::parse("sm_90"), Some(Sm::Sm90));
        assert_eq!(Sm::parse("86"), None);
        assert_eq!(Sm::Sm90.name(), "sm_90");
        assert_eq!(Sm::Sm80.virtual_name(), "compute_80");
        assert_eq!(Sm::Sm90.max_shared_bytes_per_block(), 232448);
    }

    #[test]
    fn ptxas_report_parses_every_field_of_every_kernel() {
        let log = "\
ptxas info    : 24 bytes gmem, 8 bytes cmem[4]
ptxas info    : Compiling entry function 'first' for 'sm_80'
ptxas info    : Function properties for first
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 384 bytes cmem[0], 8 bytes cmem[2]
ptxas info    : Compile time = 124.765 ms
ptxas info    : Compiling entry function 'second' for 'sm_80'
ptxas info    : Function properties for second
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 6 registers, used 0 barriers, 32 bytes cumulative stack size, 368 bytes cmem[0]
";
        let reports = parse_ptxas_report(log);
        assert_eq!(
            reports,
            vec![
                PtxasReport {
                    kernel: "first".into(),
                    registers: 40,
                    barriers: 1,
                    stack_bytes: 8,
                    spill_stores: 4,
                    spill_loads: 12,
                    shared_bytes: 1024,
                    constant_bytes: 392,
                },
                PtxasReport {
                    kernel: "second".into(),
                    registers: 6,
                    constant_bytes: 368,
                    ..PtxasReport::default()
                },
            ]
        );
    }
}
