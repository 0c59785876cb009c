/** The OCI core: what every other module of sealimg speaks. */
export * from './mediatypes.js';
export * from './types.js';
export * from './digest.js';
export * from './reference.js';
export * from './validate.js';
