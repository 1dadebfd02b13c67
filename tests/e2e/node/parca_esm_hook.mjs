// @parca/client ships ES modules whose relative imports leave out ".js" (they are meant for
// bundlers); this resolve hook adds it so Node can load the generated code as published.
export async function resolve(spec, ctx, next) {
  try {
    return await next(spec, ctx);
  } catch (e) {
    if (e.code === 'ERR_MODULE_NOT_FOUND' && spec.startsWith('.')) return next(spec + '.js', ctx);
    throw e;
  }
}
