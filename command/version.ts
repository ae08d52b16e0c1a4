/** auditmesh's version: printed by the CLI, stamped on injected pods and on the default image tag. Kept equal to package.json's (a test checks). */
export const VERSION = '0.1.0';
