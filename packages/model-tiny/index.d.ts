/** Absolute path of the kvq-tiny Hugging Face folder (config.json, model.safetensors, tokenizer files). */
export declare const modelTinyPath: string;
/** The name kvq reports for the embedded default model. */
export declare const modelTinyName: string;
