/**
 * @kvq/calibrate: FP8 KV-cache calibration (vLLM's three ways: scale 1.0, random-token warm-up, dataset observers;
 * per-tensor and per-head scales) and the checkpoints vLLM, llm-compressor and kvq load.
 * @see ../README.md
 */
export { CalibrateError, type CalibrateErrorCode, type CalibrateErrorDetails } from './errors.js';

export {
  calibrate,
  CALIBRATION_METHODS,
  randomCalibrationTokens,
  type CalibrateOptions,
  type CalibrationMethod,
  type CalibrationProgress,
  type CalibrationResult,
} from './calibrate.js';
export { KV_PLAN_CANDIDATES, planKvCacheLayers, type KvPlanMeasurement, type KvPlanOptions, type KvPlanResult } from './kv-plan.js';
export {
  parseDataset,
  parseParquet,
  readDataset,
  selectSamples,
  tokenizeSample,
  type Dataset,
  type DatasetFormat,
  type DatasetSample,
  type InlineDataset,
  type ReadDatasetOptions,
  type SampleTokenizer,
} from './dataset.js';
export { headMinMax, MINMAX_AVERAGING_CONSTANT, MinMaxObserver, OBSERVER_KINDS, tensorMinMax, type ObserverKind } from './observers.js';
export {
  CALIBRATION_FORMATS,
  convertScaleFormat,
  reduceQueryScalesPerKvHead,
  SCALE_STRATEGIES,
  uniformScales,
  validateCalibratedScales,
  type CalibratedScales,
  type LayerScales,
  type ScaleStrategy,
} from './scales.js';
export {
  formatReportTable,
  QuantStatsAccumulator,
  reportToJson,
  saturationThreshold,
  type CalibrationReport,
  type LayerReport,
  type QuantStats,
  type SlotReport,
} from './report.js';
export { kvqVersion, type Provenance } from './provenance.js';

export {
  attentionClassOf,
  CALIBRATION_JSON,
  CHECKPOINT_FLAVORS,
  compressedTensorsFp8Args,
  compressedTensorsQuantizationConfig,
  scaleTensorName,
  VLLM_SCALES_JSON,
  type CheckpointFlavor,
} from './checkpoint/formats.js';
export { vllmScalesJson, writeCheckpoint, type WeightLinkMode, type WriteCheckpointOptions, type WriteCheckpointResult } from './checkpoint/write.js';
export { parseVllmScalesJson, readCheckpointScales, type CheckpointScales } from './checkpoint/read.js';
export { convertCheckpoint, type ConvertCheckpointOptions } from './checkpoint/convert.js';
