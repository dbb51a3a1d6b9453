import { fileURLToPath } from 'node:url';

/** Absolute path of the kvq-tiny Hugging Face folder (config.json, model.safetensors, tokenizer files). */
export const modelTinyPath = fileURLToPath(new URL('./model/', import.meta.url));

/** The name kvq reports for the embedded default model. */
export const modelTinyName = 'kvq-tiny';
