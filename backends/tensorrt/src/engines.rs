//! Engines through `trtx`: TensorRT's ONNX parser fills a strongly typed network, the plan's
//! profiles go into the builder config, and the serialized engine is written next to its ONNX.
//!
//! trtx is built against TensorRT 11.4's headers and dlopens the libraries at run time, so a
//! machine without TensorRT gets [`Availability::Unavailable`] naming the library it looked for.
//!
//! Under trtx's `mock` feature (this crate's `trtx-mock`) no library is loaded and the builder,
//! network, parser and config calls are stubs; two of them would dereference a null object
//! there (`Builder::creata_optimization_profile`, `OnnxParser::parse_from_file`), so the mock
//! build reads the ONNX into memory for `parse` and converts each profile to TensorRT dims
//! without handing them to a profile object.

use std::path::Path;

use crate::{Availability, EnginePlan, Error};

/// The sonames tried, in order: TensorRT 11's (the API trtx was built against), then the
/// unversioned development links.
pub const LIBRARIES: [&[&str]; 2] = [
    &["libnvinfer.so.11", "libnvinfer.so"],
    &["libnvonnxparser.so.11", "libnvonnxparser.so"],
];

/// Builds every plan's engine into `dir` where TensorRT can be loaded. `Ok(Unavailable)` when it
/// cannot (no library, no CUDA device, or this crate built without `trtx`): the caller writes the
/// manifest either way. `Err` when TensorRT is there and a build fails.
pub fn build_engines(dir: &Path, plans: &[EnginePlan]) -> Result<Availability, Error> {
    imp::build_engines(dir, plans)
}

#[cfg(not(feature = "trtx"))]
mod imp {
    use super::*;

    pub fn build_engines(_dir: &Path, _plans: &[EnginePlan]) -> Result<Availability, Error> {
        Ok(Availability::Unavailable {
            reason: format!(
                "vl3c was compiled without the `trtx` feature of vl3c-tensorrt, so it cannot load {}",
                LIBRARIES.map(|names| names[0]).join(" or ")
            ),
        })
    }
}

#[cfg(feature = "trtx")]
mod imp {
    use super::*;
    #[cfg(not(feature = "trtx-mock"))]
    use trtx::OptProfileSelector;
    use trtx::{Builder, LogHandler, Logger, OnnxParser, Severity};

    /// The headers trtx 0.9.1's `enterprise` feature compiles against.
    const API: &str = "TensorRT 11.4 API via trtx 0.9.1";

    /// `1 << NetworkDefinitionCreationFlag::kSTRONGLY_TYPED`, which is 0 in TensorRT 11's
    /// NvInfer.h (deprecated there: 11 is strongly typed whatever the flag).
    const STRONGLY_TYPED: u32 = 1 << 0;

    /// TensorRT logs every tactic at Info; warnings and errors are what a person acts on.
    struct Quiet;

    impl LogHandler for Quiet {
        fn log(&self, severity: Severity, message: &str) {
            if severity <= Severity::Warning {
                eprintln!("[TensorRT {severity:?}] {message}");
            }
        }
    }

    pub fn build_engines(dir: &Path, plans: &[EnginePlan]) -> Result<Availability, Error> {
        if let Err(reason) = load_libraries() {
            return Ok(Availability::Unavailable { reason });
        }
        let logger = Logger::new(Quiet).map_err(|e| trt("logger", e))?;
        let mut builder = match Builder::new(&logger) {
            Ok(b) => b,
            Err(e) => {
                return Ok(Availability::Unavailable {
                    reason: format!(
                        "TensorRT loaded but no builder ({e}): no CUDA device, or libnvinfer older than the {API}"
                    ),
                })
            }
        };
        let mut engines = Vec::new();
        for plan in plans {
            build_one(&mut builder, &logger, dir, plan)?;
            engines.push(plan.engine.clone());
        }
        Ok(Availability::Built {
            tensorrt: API.to_string(),
            engines,
        })
    }

    fn load_libraries() -> Result<(), String> {
        load(LIBRARIES[0], |n| trtx::dynamically_load_tensorrt(Some(n)))?;
        load(LIBRARIES[1], |n| {
            trtx::dynamically_load_tensorrt_onnxparser(Some(n))
        })
    }

    fn load(names: &[&str], open: impl Fn(&str) -> trtx::Result<()>) -> Result<(), String> {
        let mut last = String::new();
        for name in names {
            match open(name) {
                Ok(()) => return Ok(()),
                // libloading's own message is "dlopen failed"; dlerror's text is its source.
                Err(trtx::Error::Libloading(e)) => {
                    last = match std::error::Error::source(&e) {
                        Some(why) => why.to_string(),
                        None => e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!(
            "cannot load TensorRT: tried {} on the library path ({last})",
            names.join(", ")
        ))
    }

    fn trt(context: &str, e: impl std::fmt::Display) -> Error {
        Error::TensorRt {
            context: context.to_string(),
            message: e.to_string(),
        }
    }

    fn build_one(
        builder: &mut Builder,
        logger: &Logger,
        dir: &Path,
        plan: &EnginePlan,
    ) -> Result<(), Error> {
        let e = |err: trtx::Error| trt(&plan.engine, err);
        let onnx = dir.join(&plan.onnx);
        let network = builder.create_network(STRONGLY_TYPED).map_err(e)?;
        let mut parser = OnnxParser::new(network, logger).map_err(e)?;
        parse(&mut parser, &onnx)?;
        let mut config = builder.create_config().map_err(e)?;
        for profile in &plan.profiles {
            let dims = profile_dims(profile);
            add_profile(builder, &mut config, &dims).map_err(e)?;
        }
        let engine = builder
            .build_serialized_network(parser.network_mut(), &mut config)
            .map_err(e)?;
        if engine.is_empty() && !cfg!(feature = "trtx-mock") {
            return Err(trt(&plan.engine, "the builder returned an empty engine"));
        }
        let path = dir.join(&plan.engine);
        std::fs::write(&path, &*engine).map_err(|source| Error::Io { path, source })
    }

    /// Each input's min/opt/max as TensorRT dims; `profiles` already bounded the rank by 8.
    fn profile_dims(profile: &crate::Profile) -> Vec<(&str, [trtx::trtx_sys::Dims64; 3])> {
        use trtx::trtx_sys::Dims64;
        profile
            .shapes
            .iter()
            .map(|(name, r)| {
                let d = [
                    Dims64::from_slice(&r.min),
                    Dims64::from_slice(&r.opt),
                    Dims64::from_slice(&r.max),
                ];
                (name.as_str(), d)
            })
            .collect()
    }

    #[cfg(not(feature = "trtx-mock"))]
    fn parse(parser: &mut OnnxParser, onnx: &Path) -> Result<(), Error> {
        let engine = onnx.display().to_string();
        // From the file, not from bytes: the parser finds `model.onnx.data` next to the model.
        let path = onnx
            .to_str()
            .ok_or_else(|| trt(&engine, "the ONNX path is not UTF-8"))?;
        parser
            .parse_from_file(path, Severity::Warning as i32)
            .map_err(|e| trt(&engine, e))
    }

    #[cfg(feature = "trtx-mock")]
    fn parse(parser: &mut OnnxParser, onnx: &Path) -> Result<(), Error> {
        let bytes = std::fs::read(onnx).map_err(|source| Error::Io {
            path: onnx.to_path_buf(),
            source,
        })?;
        parser
            .parse(&bytes)
            .map_err(|e| trt(&onnx.display().to_string(), e))
    }

    #[cfg(not(feature = "trtx-mock"))]
    fn add_profile(
        builder: &mut Builder,
        config: &mut trtx::BuilderConfig,
        dims: &[(&str, [trtx::trtx_sys::Dims64; 3])],
    ) -> trtx::Result<()> {
        let mut profile = builder.creata_optimization_profile()?;
        for (name, [min, opt, max]) in dims {
            profile.set_dimensions(name, OptProfileSelector::kMIN, min)?;
            profile.set_dimensions(name, OptProfileSelector::kOPT, opt)?;
            profile.set_dimensions(name, OptProfileSelector::kMAX, max)?;
        }
        config.add_optimization_profile(&mut profile)?;
        // The builder owns the profile ("users must not attempt to delete the returned pointer",
        // IBuilder::createOptimizationProfile); trtx's Drop would run its destructor.
        std::mem::forget(profile);
        Ok(())
    }

    #[cfg(feature = "trtx-mock")]
    fn add_profile(
        _builder: &mut Builder,
        _config: &mut trtx::BuilderConfig,
        _dims: &[(&str, [trtx::trtx_sys::Dims64; 3])],
    ) -> trtx::Result<()> {
        Ok(())
    }
}
